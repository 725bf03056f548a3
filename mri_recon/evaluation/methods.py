"""The reconstruction methods compared by evaluation: zero-filled, TV and every learned model.

``method`` lists them: ``zero_filled``, ``tv``, and learned models by name (``unet``,
``varnet``: the model class of a checkpoint, numbered ``unet_2``... when several checkpoints
hold the same kind), or ``learned`` for every checkpoint given; an image model's name with
``_dc`` (``unet_dc``) is its output made consistent with the measured k-space
(``evaluation.consistency``).
"""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from mri_recon.baselines.tv import slices_per_chunk, tv_settings, tv_volume
from mri_recon.checkpoints import load_model
from mri_recon.config import CONFIG_DIR
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.evaluation.consistency import (
    DC_SUFFIX,
    consistency_settings,
    consistent_images,
    uses_consistency,
)
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


def resolve_methods(requested: list[str], learned: dict[str, str]) -> list[str]:
    """The methods to run, in order, ``learned`` expanded to every checkpoint's model.

    learned: {method name: what its model takes ("image" or "kspace")} per checkpoint.
    """
    models = sorted(path.stem for path in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
    consistent = [name + DC_SUFFIX for name, kind in learned.items() if kind == "image"]
    methods: list[str] = []
    for method in map(str, requested):  # (method=[4] reaches here as an integer)
        base = method.removesuffix(DC_SUFFIX)
        if method in BASELINES:
            names = [method]
        elif method == LEARNED and learned:
            names = list(learned)
        elif method in learned or method in consistent:
            names = [method]
        elif method != base and base in learned:
            raise UserError(
                f"method {method}: data consistency is for image models "
                f"({', '.join(consistent) or 'none given'}); {base} takes the measured k-space "
                "and keeps to it itself"
            )
        elif not learned and (method in (LEARNED, *models) or base in models):
            raise UserError(
                f"method {method} needs checkpoint=PATH (a best.pt or last.pt of mri-recon-train "
                "or a .safetensors file of mri-recon-share; several as checkpoint=[A,B])"
            )
        else:
            known = [*BASELINES, LEARNED, *(learned or models), *consistent]
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
        self.models = {  # those the methods use
            name: model
            for name, model in models.items()
            if name in methods or name + DC_SUFFIX in methods
        }
        self.runtime = runtime
        # Per acceleration: TV's coil-map method and the slices its guard replaced.
        self.tv_notes: dict[str, dict[str, Any]] = {}

    def needs_kspace(self) -> bool:
        """Whether the samples must carry their masked k-space: for TV, data consistency and
        k-space models."""
        kspace_models = any(takes(model) == "kspace" for model in self.models.values())
        return "tv" in self.methods or uses_consistency(self.methods) or kspace_models

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

    def consistent(self, batch: Sample, acceleration: int, images: np.ndarray) -> np.ndarray:
        """(slices, h, w): a model's ``images`` of the volume made consistent with its measured
        k-space on the device, as many slices at a time as TV solves (``baseline.batch_size``,
        on a CPU fewer where they would leave glibc's heap: ``tv.slices_per_chunk``)."""
        settings = consistency_settings(self.cfg, self.cfg.data.challenge, acceleration)
        device, outputs = self.runtime.device, []
        chunk = slices_per_chunk(batch.masked_kspace, self.cfg.baseline.batch_size, device)
        for start in range(0, len(batch.fname), chunk):
            part = slice(start, start + chunk)
            found = consistent_images(
                torch.from_numpy(images[part]).to(device),
                batch.masked_kspace[part].to(device),
                batch.mask[part].to(device),
                settings,
            )
            outputs.append(found.float().cpu())
        return torch.cat(outputs).numpy()

    def __call__(
        self, batch: Sample, acceleration: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """({method: (slices, H, W) volume}, {method: seconds it took}) for one volume; a
        ``_dc`` method is charged its model's time too (the ``_dc`` methods run last, so a
        model asked for as well runs once)."""
        volumes, seconds = {}, {}
        for method in sorted(self.methods, key=lambda name: name.endswith(DC_SUFFIX)):
            start, base = time.perf_counter(), method.removesuffix(DC_SUFFIX)
            if method == "zero_filled":
                volumes[method] = unnormalize(batch.image, batch)
            elif method == "tv":
                volumes[method] = self.tv(batch, acceleration)
            elif method == base:
                volumes[method] = self.learned(batch, self.models[method])
            elif base in volumes:
                start -= seconds[base]
                volumes[method] = self.consistent(batch, acceleration, volumes[base])
            else:
                images = self.learned(batch, self.models[base])
                volumes[method] = self.consistent(batch, acceleration, images)
            seconds[method] = time.perf_counter() - start
        return volumes, seconds
