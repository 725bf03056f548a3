"""Model inference on batches of ``Sample`` and assembly of slices into volumes."""

from collections import defaultdict
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from mri_recon.data.transforms import Sample


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast on the given device when asked, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def unnormalize(images: torch.Tensor, batch: Sample) -> np.ndarray:
    """(B, 1, H, W) normalized images -> (B, H, W) float32 in the file's units."""
    std = batch.std.reshape(-1, 1, 1, 1).to(images)
    mean = batch.mean.reshape(-1, 1, 1, 1).to(images)
    return (images.float() * std + mean)[:, 0].cpu().numpy().astype(np.float32)


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, device: torch.device, bf16: bool
) -> torch.Tensor:
    """The model's (B, 1, H, W) output for (B, 1, H, W) normalized zero-filled images."""
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, bf16):
        return model(images).float()


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
