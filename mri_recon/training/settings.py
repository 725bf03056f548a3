"""Checks of a training config, run before any work starts."""

from omegaconf import DictConfig, OmegaConf

from mri_recon.config import check_value, is_number
from mri_recon.data.dataset import TARGET_KEYS
from mri_recon.data.loaders import check_num_workers, check_transform_on
from mri_recon.errors import UserError
from mri_recon.models.unet import NORMS, group_count
from mri_recon.models.varnet import DATA_CONSISTENCIES, MAP_SOURCES, STARTS
from mri_recon.runtime import check_channels_last, check_compile, check_precision
from mri_recon.training.budget import parse_max_time

NUMBER_RULES = [  # key, integer?, valid, what is expected
    ("optimizer.lr", False, lambda v: v > 0, "a positive number"),
    ("trainer.max_bad_steps", True, lambda v: v >= 1, "an integer >= 1"),
    ("trainer.stop_check_every_n_steps", True, lambda v: v >= 1, "an integer >= 1"),
    ("trainer.budget_margin", False, lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("data.batch_size", True, lambda v: v >= 1, "an integer >= 1"),
    ("model.chans", True, lambda v: v >= 1, "an integer >= 1"),
    ("model.num_pool_layers", True, lambda v: v >= 0, "an integer >= 0"),
    ("model.groups", True, lambda v: v >= 1, "an integer >= 1"),
    ("model.drop_prob", False, lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    ("model.num_cascades", True, lambda v: v >= 1, "an integer >= 1"),
    ("model.sens_chans", True, lambda v: v >= 0, "an integer >= 0"),
    ("model.sens_pool_layers", True, lambda v: v >= 0, "an integer >= 0"),
    ("model.sense_iterations", True, lambda v: v >= 1, "an integer >= 1"),
    ("model.dc_iterations", True, lambda v: v >= 1, "an integer >= 1"),
]
# Model keys whose U-Nets get GroupNorm with ``model.groups`` groups: first width -> poolings
# (each pooling doubles the width).
WIDTH_KEYS = {"chans": "num_pool_layers", "sens_chans": "sens_pool_layers"}


def check_model(model: DictConfig, challenge: str) -> None:
    """Raise UserError for a model setting that cannot work (the rules of the keys it has)."""
    choices = {
        "norm": NORMS,
        "sens_maps": MAP_SOURCES,
        "start": STARTS,
        "data_consistency": DATA_CONSISTENCIES,
    }
    for key, known in choices.items():
        if key in model and model[key] not in known:
            raise UserError(f"model.{key}: expected one of {list(known)}, got {model[key]!r}")
    for key, pools in WIDTH_KEYS.items():
        if model.norm == "group" and model.get(key):  # 0: no such network
            try:
                for level in range(model[pools] + 1):
                    group_count(model[key] * 2**level, model.groups)
            except ValueError as error:
                raise UserError(
                    f"{error}: choose model.groups dividing model.{key}={model[key]}"
                ) from error
    if "challenge" in model and model.challenge != challenge:
        raise UserError(
            f"model.challenge: {model.challenge!r}, but data.challenge is {challenge!r} "
            "(leave model.challenge at ${data.challenge})"
        )


def check_length(cfg: DictConfig) -> None:
    """A run needs an epoch count, a budget or both (whichever ends it first)."""
    budget = parse_max_time(cfg.trainer.max_time)
    if cfg.trainer.max_epochs is not None or budget is None:
        expected = "an integer >= 1" + ("" if budget else " (null only with trainer.max_time)")
        check_value(cfg, "trainer.max_epochs", True, lambda v: v >= 1, expected)


def check_milestones(scheduler: DictConfig) -> None:
    """``scheduler=step``'s milestones: fractions of the run, each in (0, 1)."""
    if "milestones" not in scheduler:
        return
    milestones = scheduler.milestones
    listed = OmegaConf.is_list(milestones)
    if not listed or not all(is_fraction(milestone) for milestone in milestones):
        shown = OmegaConf.to_object(milestones) if listed else milestones
        raise UserError(
            f"scheduler.milestones: expected a list of fractions of the run in (0, 1), e.g. "
            f"[0.8], got {shown!r}"
        )


def is_fraction(value: object) -> bool:
    """A number strictly between 0 and 1."""
    return is_number(value) and 0 < value < 1


def check_config(cfg: DictConfig) -> None:
    """Raise UserError naming the first value that cannot work."""
    for key, integer, valid, expected in NUMBER_RULES:
        if not key.startswith("model.") or key.split(".")[1] in cfg.model:
            check_value(cfg, key, integer, valid, expected)
    if cfg.trainer.gradient_clip_val is not None:
        check_value(
            cfg, "trainer.gradient_clip_val", False, lambda v: v > 0, "a positive number or null"
        )
    check_length(cfg)
    check_milestones(cfg.scheduler)
    check_precision(cfg.trainer.precision)
    for key in ("deterministic", "defer_sync"):
        if not isinstance(cfg.trainer[key], bool):
            raise UserError(f"trainer.{key}: expected true or false, got {cfg.trainer[key]!r}")
    if cfg.trainer.defer_sync and cfg.model.get("drop_prob", 0) > 0:
        # A checkpoint between two deferred steps holds the random state after the next step's
        # forward: with dropout, resume would not be exact.
        raise UserError(
            f"trainer.defer_sync: expected model.drop_prob=0 (dropout draws random numbers "
            f"before a step is settled, so resume would not be exact), got "
            f"{cfg.model.drop_prob}; or set trainer.defer_sync=false"
        )
    check_channels_last(cfg.trainer.channels_last)
    check_compile(cfg.trainer.compile)
    check_transform_on(cfg.data.transform_on)
    check_num_workers(cfg.data.num_workers)
    if cfg.data.challenge not in TARGET_KEYS:
        raise UserError(
            f"data.challenge: expected singlecoil or multicoil, got {cfg.data.challenge!r}"
        )
    check_model(cfg.model, cfg.data.challenge)
