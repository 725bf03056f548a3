"""Model inference on batches of ``Sample`` and assembly of slices into volumes."""

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from mri_recon.data.transforms import Sample
from mri_recon.runtime import Runtime


def in_file_units(images: torch.Tensor, batch: Sample) -> torch.Tensor:
    """Undo the normalization of (B, 1, H, W) ``images`` (with the batch's mean and std)."""
    std = batch.std.reshape(-1, 1, 1, 1).to(images)
    return images * std + batch.mean.reshape(-1, 1, 1, 1).to(images)


def unnormalize(images: torch.Tensor, batch: Sample) -> np.ndarray:
    """(B, 1, H, W) normalized images -> (B, H, W) float32 numpy in the file's units."""
    return in_file_units(images.float(), batch)[:, 0].cpu().numpy().astype(np.float32)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """The model's (B, 1, H, W) float32 output for (B, 1, H, W) normalized zero-filled images."""
    with runtime.autocast():
        return model(runtime.images(images)).float()


class VolumeCollector:
    """Gathers (B, H, W) slice batches per file and stacks them into (slices, H, W) volumes."""

    def __init__(self) -> None:
        self.slices: dict[str, dict[int, np.ndarray]] = defaultdict(dict)

    def add(self, images: np.ndarray, fnames: list[str], slice_nums: torch.Tensor) -> None:
        for image, fname, slice_num in zip(images, fnames, slice_nums.tolist(), strict=True):
            self.slices[fname][slice_num] = image

    def volumes(self) -> dict[str, np.ndarray]:
        """{file name: (slices, H, W)} in slice order, files sorted by name."""
        return {
            fname: np.stack([slices[i] for i in sorted(slices)])
            for fname, slices in sorted(self.slices.items())
        }
