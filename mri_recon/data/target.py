"""The fastMRI target of fully sampled k-space, on numpy arrays (the demo generator and the
ISMRMRD converter write it into their files)."""

import numpy as np
import torch

from mri_recon.fourier import ifft2c


def center_crop(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop the last two axes to ``shape`` (H, W) around their centers (fastMRI's centering)."""
    height, width = array.shape[-2:]
    top, left = (height - shape[0]) // 2, (width - shape[1]) // 2
    return array[..., top : top + shape[0], left : left + shape[1]]


def target_image(kspace: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The release's target of fully sampled k-space: (slices, *size) float32.

    kspace: (slices, H, W) single-coil (the magnitude image) or (slices, coils, H, W)
    multi-coil (root-sum-of-squares over coils), inverse FFT then cropped to ``size``.
    """
    images = np.abs(center_crop(ifft2c(torch.from_numpy(kspace)).numpy(), size))
    target = np.sqrt((images**2).sum(axis=1)) if kspace.ndim == 4 else images
    return target.astype(np.float32)
