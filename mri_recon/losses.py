"""Training losses (the ``loss`` config group): L1, SSIM, or a weighted sum of the two.

Each is called as ``loss(output, target, batch)`` with (B, 1, h, w) images on the zero-filled
image's normalized scale (``models.interface``) and the batch's ``mean``, ``std`` and
``max_value``. L1 is taken on that scale (the U-Net's loss); SSIM as fastMRI trains its VarNet:
fastmri.losses.SSIMLoss (7x7 window, k1 0.01, k2 0.03) on the images in the file's units with
the volume's maximum as data range.
"""

import torch
from fastmri.losses import SSIMLoss
from torch import nn
from torch.nn import functional as F

from mri_recon.data.transforms import Sample
from mri_recon.reconstruct import in_file_units


class L1Loss(nn.Module):
    """Mean absolute error on the normalized scale."""

    def forward(self, output: torch.Tensor, target: torch.Tensor, batch: Sample) -> torch.Tensor:
        return F.l1_loss(output, target)


class StructuralLoss(nn.Module):
    """1 - SSIM in the file's units, data range the volume's maximum (else the target's)."""

    def __init__(self) -> None:
        super().__init__()
        self.ssim = SSIMLoss()

    def forward(self, output: torch.Tensor, target: torch.Tensor, batch: Sample) -> torch.Tensor:
        output, target = in_file_units(output, batch), in_file_units(target, batch)
        volume_max = torch.as_tensor(batch.max_value, dtype=target.dtype).to(target.device)
        data_range = torch.where(volume_max > 0, volume_max, target.amax(dim=(1, 2, 3)))
        return self.ssim.to(target.device)(output, target, data_range)


class L1SSIMLoss(nn.Module):
    """``ssim_weight`` * (1 - SSIM) + (1 - ``ssim_weight``) * L1."""

    def __init__(self, ssim_weight: float) -> None:
        super().__init__()
        self.ssim_weight = ssim_weight
        self.l1, self.structural = L1Loss(), StructuralLoss()

    def forward(self, output: torch.Tensor, target: torch.Tensor, batch: Sample) -> torch.Tensor:
        structural = self.structural(output, target, batch)
        return self.ssim_weight * structural + (1 - self.ssim_weight) * self.l1(
            output, target, batch
        )
