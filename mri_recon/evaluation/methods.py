"""The reconstruction methods compared by evaluation: zero-filled, TV and the trained U-Net."""

import time

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from mri_recon.baselines.tv import tv_settings, tv_volume
from mri_recon.checkpoints import load_model
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.reconstruct import predict, unnormalize
from mri_recon.runtime import Runtime

METHODS = ("zero_filled", "tv", "unet")


def check_methods(methods: list[str]) -> None:
    for method in methods:
        if method not in METHODS:
            raise UserError(f"method: expected entries from {list(METHODS)}, got {method!r}")


def model_for(checkpoint: str | None, device: torch.device) -> tuple[nn.Module, DictConfig]:
    """The checkpoint's (or weights file's) model, eval mode on ``device``, and its config."""
    if checkpoint is None:
        raise UserError(
            "method unet needs checkpoint=PATH (a best.pt or last.pt of mri-recon-train, "
            "or a .safetensors file of mri-recon-share)"
        )
    return load_model(checkpoint, device)


class Reconstructor:
    """Runs the requested methods on one volume batch and times each of them.

    ``cfg`` is the evaluation config (``baseline``, ``data.challenge``, ``data.batch_size``: the
    U-Net's slices per forward pass).
    """

    def __init__(
        self, cfg: DictConfig, methods: list[str], model: nn.Module | None, runtime: Runtime
    ) -> None:
        self.cfg = cfg
        self.methods = methods
        self.model = model
        self.runtime = runtime

    def unet(self, batch: Sample) -> np.ndarray:
        chunk = self.cfg.data.batch_size
        outputs = [
            predict(self.model, batch.image[i : i + chunk], self.runtime)
            for i in range(0, len(batch.fname), chunk)
        ]
        return unnormalize(torch.cat(outputs), batch)

    def tv(self, batch: Sample, acceleration: int) -> np.ndarray:
        settings = tv_settings(self.cfg.baseline, self.cfg.data.challenge, acceleration)
        return tv_volume(batch, settings, self.runtime.device, self.cfg.baseline.batch_size)

    def __call__(
        self, batch: Sample, acceleration: int
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """({method: (slices, H, W) volume}, {method: seconds it took}) for one volume."""
        volumes, seconds = {}, {}
        for method in self.methods:
            start = time.perf_counter()
            if method == "zero_filled":
                volumes[method] = unnormalize(batch.image, batch)
            elif method == "unet":
                volumes[method] = self.unet(batch)
            else:
                volumes[method] = self.tv(batch, acceleration)
            seconds[method] = time.perf_counter() - start
        return volumes, seconds
