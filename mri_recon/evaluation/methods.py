"""The reconstruction methods compared by evaluation: zero-filled, TV and every learned model.

``method`` lists them: ``zero_filled``, ``tv``, and learned models by name (``unet``,
``varnet``: the model class of a checkpoint, numbered ``unet_2``... when several checkpoints
hold the same kind), or ``learned`` for every checkpoint given.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from mri_recon.baselines.tv import tv_settings, tv_volume
from mri_recon.checkpoints import load_model
from mri_recon.config import CONFIG_DIR
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.models.interface import model_output, takes
from mri_recon.reconstruct import unnormalize
from mri_recon.runtime import Runtime

BASELINES = ("zero_filled", "tv")
LEARNED = "learned"


def checkpoint_list(checkpoint: str | ListConfig | None) -> list[str]:
    """``checkpoint=PATH`` or ``checkpoint=[A,B]`` as a list of paths ([] when not given)."""
    if checkpoint is None:
        return []
    if isinstance(checkpoint, ListConfig | list):
        return [str(path) for path in checkpoint]
    return [str(checkpoint)]


def load_learned(
    checkpoints: list[str], device: torch.device
) -> dict[str, tuple[nn.Module, DictConfig]]:
    """{method name: (model in eval mode on ``device``, its training config)} per checkpoint."""
    models: dict[str, tuple[nn.Module, DictConfig]] = {}
    for path in checkpoints:
        model, train_cfg = load_model(path, device)
        base = type(model).__name__.lower()
        name, number = base, 1
        while name in models:
            number += 1
            name = f"{base}_{number}"
        models[name] = (model, train_cfg)
    return models


def resolve_methods(requested: list[str], learned: list[str]) -> list[str]:
    """The methods to run, in order, ``learned`` expanded to every checkpoint's model."""
    models = sorted(path.stem for path in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
    methods: list[str] = []
    for method in requested:
        if method in BASELINES:
            names = [method]
        elif method == LEARNED and learned:
            names = learned
        elif method in learned:
            names = [method]
        elif not learned and method in (LEARNED, *models):
            raise UserError(
                f"method {method} needs checkpoint=PATH (a best.pt or last.pt of mri-recon-train "
                "or a .safetensors file of mri-recon-share; several as checkpoint=[A,B])"
            )
        else:
            known = [*BASELINES, LEARNED, *(learned or models)]
            raise UserError(f"method: expected entries from {known}, got {method!r}")
        methods += [name for name in names if name not in methods]
    return methods


class Reconstructor:
    """Runs the methods on one volume batch and times each of them.

    ``cfg`` is the evaluation config (``baseline``, ``data.challenge``, ``data.batch_size``: the
    learned models' slices per forward pass).
    """

    def __init__(
        self, cfg: DictConfig, methods: list[str], models: dict[str, nn.Module], runtime: Runtime
    ) -> None:
        self.cfg = cfg
        self.methods = methods
        self.models = models
        self.runtime = runtime
        # Per acceleration: TV's coil-map method and the slices its guard replaced.
        self.tv_notes: dict[str, dict[str, Any]] = {}

    @torch.no_grad()
    def learned(self, batch: Sample, model: nn.Module) -> np.ndarray:
        """(slices, h, w) of a learned model, ``data.batch_size`` slices at a time."""
        chunk, outputs = self.cfg.data.batch_size, []
        for start in range(0, len(batch.fname), chunk):
            part = Sample(*(field[start : start + chunk] for field in batch))
            outputs.append(model_output(model, takes(model), part, self.runtime))
        return unnormalize(torch.cat(outputs), batch)

    def tv(self, batch: Sample, acceleration: int) -> np.ndarray:
        settings = tv_settings(self.cfg.baseline, self.cfg.data.challenge, acceleration)
        result = tv_volume(batch, settings, self.runtime.device, self.cfg.baseline.batch_size)
        note = self.tv_notes.setdefault(str(acceleration), {"coil_maps": result.maps})
        replaced = result.diverged.nonzero().flatten().tolist()
        note.setdefault("replaced_slices", []).extend(
            f"{batch.fname[i]} slice {int(batch.slice_num[i])}" for i in replaced
        )
        return result.images.numpy()

    def __call__(
        self, batch: Sample, acceleration: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """({method: (slices, H, W) volume}, {method: seconds it took}) for one volume."""
        volumes, seconds = {}, {}
        for method in self.methods:
            start = time.perf_counter()
            if method == "zero_filled":
                volumes[method] = unnormalize(batch.image, batch)
            elif method == "tv":
                volumes[method] = self.tv(batch, acceleration)
            else:
                volumes[method] = self.learned(batch, self.models[method])
            seconds[method] = time.perf_counter() - start
        return volumes, seconds
