"""Centered orthonormal 2-D FFTs on numpy arrays, and the fastMRI target of full k-space."""

import numpy as np


def fft2c(image: np.ndarray) -> np.ndarray:
    """Centered orthonormal 2-D FFT over the last two axes (fastmri.fft2c's convention)."""
    shifted = np.fft.ifftshift(image, axes=(-2, -1))
    return np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centered orthonormal 2-D inverse FFT over the last two axes."""
    shifted = np.fft.ifftshift(kspace, axes=(-2, -1))
    return np.fft.fftshift(np.fft.ifft2(shifted, norm="ortho"), axes=(-2, -1))


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
    images = np.abs(center_crop(ifft2c(kspace), size))
    target = np.sqrt((images**2).sum(axis=1)) if kspace.ndim == 4 else images
    return target.astype(np.float32)
