"""Checkpoints: written atomically, holding everything needed to continue a run exactly."""

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mri_recon.errors import UserError
from mri_recon.files import atomic_path


def rng_states() -> dict[str, Any]:
    """Every random state the training loop draws from."""
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Undo ``rng_states``."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (on the CPU), with a one-line error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist (expected a .pt file from mri-recon-train)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise UserError(
            f"checkpoint {path} is unreadable or corrupt ({type(error).__name__})"
        ) from error
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not an mri-recon checkpoint (no model/config)")
    return state
