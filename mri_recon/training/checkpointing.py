"""Checkpoints: written atomically, holding everything needed to continue a run exactly; resume.

A checkpoint is ``TrainState.state_dict()``: model, optimizer, scheduler, progress counters, RNG
states and the resolved config of the run, all plain types and tensors, so that it loads with
``torch.load(weights_only=True)`` (reading it is ``mri_recon.checkpoints``).
"""

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mri_recon import distributed
from mri_recon.checkpoints import (
    check_saved_config,
    load_checkpoint,
    merge_saved_config,
    unknown_settings,
)
from mri_recon.errors import UserError
from mri_recon.files import atomic_path

log = logging.getLogger(__name__)

# Command-line overrides that still apply when a run is resumed from its saved config.
RESUMABLE_OVERRIDES = ("trainer.", "data.root", "data.num_workers", "data.cache_dir")


def rng_states() -> dict[str, Any]:
    """Every random state the training loop draws from."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        # As plain values and a tensor, so that loading needs no numpy types.
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Undo ``rng_states``."""
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, flushed, then renamed.

    A crash mid-write leaves the previous checkpoint at ``path`` intact.
    """
    try:
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise UserError(f"could not write checkpoint {path}: {error.strerror or error}") from error


def resolve_resume(
    cfg: DictConfig, run_dir: Path, overrides: list[str]
) -> tuple[DictConfig, dict[str, Any] | None]:
    """The config to train with and the checkpoint to continue from (None for a new run).

    ``trainer.resume=true`` continues ``<run dir>/checkpoints/last.pt``; ``auto`` continues it if
    it exists and starts afresh if not (a requeued Slurm job); a path continues that checkpoint
    (or that run directory's last.pt). The saved run's config is used, with only the
    ``trainer.*`` and data location ones of the command line's ``overrides`` applied on top.
    """
    resume = cfg.trainer.resume
    own = run_dir / "checkpoints" / "last.pt"
    if resume is False or resume is None or (resume == "auto" and not own.is_file()):
        return cfg, None
    path = own if resume in (True, "auto") else Path(str(resume))
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(
            f"trainer.resume: no checkpoint at {path} (to continue a run, pass "
            "hydra.run.dir=<that run's directory> trainer.resume=true)"
        )
    state = load_checkpoint(path)
    check_saved_config(state["config"], path)
    state["path"] = str(path)  # for error messages
    warn_unknown_settings(state["config"], cfg)
    kept = [item for item in overrides if item.startswith(RESUMABLE_OVERRIDES)]
    merged = merge_saved_config(cfg, state["config"], kept)
    # The model exactly as saved: a setting added since (model.residual) keeps the behaviour of
    # the version that wrote the checkpoint, its class default, not today's config default.
    merged.model = OmegaConf.create(state["config"]["model"])
    # Settings of this invocation, not of the run: where to stop and what to resume.
    merged.trainer.resume = resume
    merged.trainer.stop_after_epoch = cfg.trainer.stop_after_epoch
    return merged, state


def warn_unknown_settings(saved: dict[str, Any], cfg: DictConfig) -> None:
    """Name the saved run's data and trainer settings that this version does not have (a
    checkpoint of another version): they are carried along, unused."""
    unknown = unknown_settings(saved, cfg, ("data", "trainer"))
    if unknown:
        log.warning(
            "the checkpoint's settings %s are not known to this version: unused",
            ", ".join(unknown),
        )


class Checkpoints:
    """The run's checkpoints/ folder; only rank 0 writes to it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, state: dict[str, Any], name: str) -> None:
        """Write ``state`` as ``<folder>/<name>`` (on rank 0; other ranks do nothing)."""
        if distributed.is_main():
            save_checkpoint(state, self.folder / name)
