"""Reading checkpoints and shared weights without running anything from them.

Training and evaluation both come here: a training checkpoint (``.pt``, written by
``training.checkpointing.save_checkpoint``) or a weights-only file for sharing (``.safetensors``,
written by ``mri-recon-share``) becomes a model and the config it was trained with.

A file handed to us is untrusted. ``.pt`` files are unpickled with ``torch.load(weights_only=True)``
(tensors, numbers, strings, lists and dicts; no imports, no calls), and a config's ``_target_``
entries, which Hydra would import and call, must name one of the classes or functions this
project's own configs name. Anything else is refused with one line before any of it runs.
"""

import functools
import json
import re
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from mri_recon.config import CONFIG_DIR
from mri_recon.errors import UserError
from mri_recon.files import atomic_path
from mri_recon.models.varnet import fastmri_settings, from_fastmri

# What checkpoints of earlier versions hold besides plain types: numpy's RNG state, a uint32
# array. Rebuilding an ndarray runs no code of the file's choosing.
LEGACY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]
WEIGHTS_FORMAT = "mri-recon weights 1"  # the safetensors metadata "format" of mri-recon-share


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every ``_target_`` named in configs/: the only ones a loaded config may name."""
    pattern = re.compile(r"^\s*_target_:\s*(\S+)", re.MULTILINE)
    return frozenset(
        target
        for path in Path(CONFIG_DIR).rglob("*.yaml")
        for target in pattern.findall(path.read_text())
    )


def foreign_targets(config: Any) -> list[str]:
    """The ``_target_`` values anywhere in ``config`` (dicts and lists) that configs/ does not name."""
    if isinstance(config, dict):
        own = config.get("_target_")
        found = [own] if own is not None and own not in allowed_targets() else []
        return found + [t for value in config.values() for t in foreign_targets(value)]
    if isinstance(config, list):
        return [t for value in config for t in foreign_targets(value)]
    return []


def check_saved_config(config: Any, path: Path) -> None:
    """Raise UserError unless ``config`` is a training config naming only our own targets."""
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or "_target_" not in model:
        raise UserError(
            f"checkpoint {path} holds no training config with a model (empty or foreign config)"
        )
    foreign = foreign_targets(config)
    if foreign:
        raise UserError(
            f"checkpoint {path}: its config names {foreign[0]!r}, which is not one of this "
            "project's models, optimizers or schedules: refused, nothing in it was run"
        )


def unpickle(path: Path) -> Any:
    """``torch.load`` of ``path`` that builds data only (see the module docstring)."""
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or hostile file
        unsafe = re.search(r"GLOBAL (\S+)", str(error))
        if unsafe:
            raise UserError(
                f"checkpoint {path} needs {unsafe.group(1)} to load, which a checkpoint never "
                "holds: refused, nothing in it was run (only load files you trust)"
            ) from error
        raise UserError(
            f"checkpoint {path} is unreadable or corrupt ({type(error).__name__})"
        ) from error


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint (on the CPU), with a one-line error for a missing, damaged or
    hostile file. Its ``config`` is not checked here: ``check_saved_config`` does that."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist (expected a .pt file from mri-recon-train)"
        )
    state = unpickle(path)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not an mri-recon checkpoint (no model/config)")
    return state


def load_weights_file(path: Path) -> dict[str, Any]:
    """A ``.safetensors`` file of mri-recon-share as ``{"model": weights, "config": config}``."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        weights = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise UserError(f"weights file {path} is unreadable or corrupt ({error})") from error
    if metadata.get("format") != WEIGHTS_FORMAT or "config" not in metadata:
        raise UserError(f"weights file {path} was not written by mri-recon-share (no config)")
    return {"model": weights, "config": json.loads(metadata["config"])}


def read_model_file(path: str | Path) -> dict[str, Any]:
    """``{"model": weights, "config": training config}`` of a .pt checkpoint or a .safetensors
    weights file, its config checked."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        state = load_weights_file(path)
    else:
        state = load_checkpoint(path)
    check_saved_config(state["config"], path)
    weights = state["model"]
    if not isinstance(weights, dict) or not weights:
        raise UserError(f"checkpoint {path} holds no model weights")
    return state


def detail(error: Exception) -> str:
    """The line of a library's multi-line error message that says what went wrong (its second;
    the whole message when it has one line)."""
    lines = str(error).splitlines()
    return (lines[1] if len(lines) > 1 else str(error)).strip()


def build_model(model_cfg: DictConfig, origin: str) -> nn.Module:
    """The model ``model_cfg`` describes; a config this version cannot build (a setting it does
    not know, e.g. from a checkpoint of another version, or a value the model rejects) is one
    UserError line naming ``origin`` (``"model"``, ``"checkpoint PATH"``)."""
    try:
        return hydra.utils.instantiate(model_cfg)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):  # a setting the model itself rejects
            raise UserError(f"{origin}: {error.__cause__}") from error
        raise UserError(
            f"{origin}: the model config cannot be built here ({detail(error)})"
        ) from error


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``, with one line when they belong to another model."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise UserError(
            f"checkpoint {path}: weights do not fit its model config ({detail(error)})"
        ) from error


def load_model(path: str | Path, device: torch.device) -> tuple[nn.Module, DictConfig]:
    """The model of a checkpoint or weights file (eval mode, on ``device``) and its config."""
    state = read_model_file(path)
    train_cfg = OmegaConf.create(state["config"])
    model = build_model(train_cfg.model, f"checkpoint {path}")
    load_weights(model, state["model"], path)
    return model.to(device).eval(), train_cfg


def merge_saved_config(
    defaults: DictConfig, saved: dict[str, Any] | DictConfig, overrides: list[str]
) -> DictConfig:
    """A saved config over today's defaults, with command-line ``overrides`` on top.

    Defaults first, so checkpoints from older versions get the keys added since.
    """
    plain = OmegaConf.create(OmegaConf.to_container(defaults))
    return OmegaConf.merge(plain, saved, OmegaConf.from_dotlist(overrides))


def unknown_settings(saved: Any, defaults: DictConfig, sections: tuple[str, ...]) -> list[str]:
    """The ``section.key`` settings of a saved config's ``sections`` that this version's
    ``defaults`` do not have (a checkpoint of another version)."""
    return [
        f"{section}.{key}"
        for section in sections
        for key in saved.get(section, {})
        if key not in defaults[section]
    ]


def write_weights_file(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a checkpoint's model weights and training config as a ``.safetensors`` file.

    The file holds tensors and a JSON config only (no optimizer, RNG states or pickle), so
    anyone can load it without trusting its author; ``mri-recon-eval checkpoint=<it>`` takes it
    as it takes the checkpoint. The checkpoint is checked as a load would (config, weights fit).
    """
    check_weights_path(out)
    model, train_cfg = load_model(checkpoint, torch.device("cpu"))
    return save_weights_file(model, train_cfg, out)


def check_weights_path(out: str | Path) -> None:
    """Raise UserError unless ``out`` names a .safetensors file."""
    if Path(out).suffix != ".safetensors":
        raise UserError(f"out: expected a path ending in .safetensors, got {str(out)!r}")


def save_weights_file(model: nn.Module, train_cfg: DictConfig, out: str | Path) -> Path:
    """Write ``model``'s weights and ``train_cfg`` (resolved, as JSON) to ``out`` atomically."""
    out = Path(out).expanduser()
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(OmegaConf.to_container(train_cfg, resolve=True)),
    }
    with atomic_path(out) as temporary:
        save_file(weights, str(temporary), metadata=metadata)
    return out


def import_fastmri_varnet(path: str | Path, out: str | Path, varnet_cfg: DictConfig) -> Path:
    """Write a ``fastmri.models.VarNet`` state dict (fastMRI's published models too) as a
    weights file that ``mri-recon-eval`` takes like our own: its settings read from its tensors,
    the network ours with ``norm=instance`` on the full readout (the same network, tested).

    ``varnet_cfg``: the training config with ``model=varnet`` (what ``mri-recon-train
    model=varnet`` composes); its model settings are replaced by the state dict's, its data
    config is the multi-coil one the evaluation's ``data=`` overrides replace.
    """
    check_weights_path(out)
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"fastmri_varnet: {path} does not exist (expected a VarNet state dict)")
    state = unpickle(path)
    try:
        settings = fastmri_settings(state if isinstance(state, dict) else {})
    except ValueError as error:
        raise UserError(
            f"fastmri_varnet: {path} is not a fastmri.models.VarNet state dict ({error})"
        ) from error
    train_cfg = OmegaConf.merge(
        varnet_cfg,
        {"data": {"challenge": "multicoil"}},
        {"model": {**settings, "norm": "instance", "crop_readout": False}},
    )
    model = build_model(train_cfg.model, f"fastmri_varnet {path}")
    weights = from_fastmri(state, settings["num_pool_layers"], settings["sens_pool_layers"])
    load_weights(model, weights, path)
    return save_weights_file(model, train_cfg, out)
