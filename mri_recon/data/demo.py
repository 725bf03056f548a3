"""Synthesis of a realistic demo dataset from the MNI ICBM152 2009 brain template.

Each volume is a slab of axial slices of the template with its own smooth deformation, pose, tissue
contrast (T1-, T2- or PD-like from grey/white-matter/CSF maps), bias field and smooth phase. It is
then "acquired" like the fastMRI release: 2x oversampled readout, zero-padded phase-encode edges,
small scanner-like units, complex Gaussian k-space noise, and for multi-coil smooth coil
sensitivities. Everything here is numpy; ``generate.py`` writes the arrays into fastMRI-layout
files.
"""

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
from scipy import ndimage

TEMPLATE_FILES = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# Voxel index of the MNI origin in the 1 mm template (its affine's translation, negated).
MNI_ORIGIN_VOXEL = np.array([98.0, 134.0, 72.0])
# The image center in MNI millimetres: roughly the middle of the head in x and y.
HEAD_CENTER_MM = np.array([0.0, -18.0])

# Mean tissue intensities (GM, WM, CSF) of the three synthetic contrasts.
CONTRASTS = {
    "AXT1": (0.55, 0.85, 0.12),
    "AXT2": (0.60, 0.42, 1.00),
    "AXPD": (0.85, 0.70, 0.95),
}


@dataclass(frozen=True)
class Template:
    """Tissue probability maps on the 1 mm MNI grid, each (197, 233, 189) float32 in [0, 1]."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray


@dataclass(frozen=True)
class Acquisition:
    """How a volume is imaged: sizes in pixels, field of view, noise and coil count."""

    image_size: int  # target is image_size x image_size; readout has 2 * image_size samples
    kspace_width: int  # phase-encode matrix, zero-padded
    acquired_columns: int  # central phase-encode lines actually measured
    field_of_view_mm: float
    num_slices: int
    slice_spacing_mm: float
    snr: float  # mean foreground signal of the coil-combined image / noise standard deviation
    signal_scale: float  # typical target maximum, in the release's small raw units
    num_coils: int  # 1 means single-coil


@functools.cache
def load_template() -> Template:
    """Load the MNI ICBM152 2009c template that nilearn ships inside its wheel (no download)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed: it ships the MNI template the demo uses")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    maps = {
        name: nibabel.load(folder / file).get_fdata(dtype=np.float32) / 255.0
        for name, file in TEMPLATE_FILES.items()
    }
    gm, wm = maps["gm"], maps["wm"]
    # The template is skull-stripped: CSF is what is left of a smoothed brain envelope.
    brain = ndimage.gaussian_filter(gm + wm, 3.0) > 0.25
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    return Template(gm, wm, csf.astype(np.float32))


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], knots: int) -> np.ndarray:
    """A smooth random field of ``shape`` in about [-1, 1]: cubic zoom of a coarse Gaussian grid."""
    coarse = rng.standard_normal([knots] * len(shape))
    zoom = [size / knots for size in shape]
    return ndimage.zoom(coarse, zoom, order=3, mode="nearest")[tuple(slice(0, s) for s in shape)]


def sampling_coordinates(
    rng: np.random.Generator, acq: Acquisition, height: int, slab_start_mm: float
) -> np.ndarray:
    """Template voxel coordinates (3, slices, height, kspace_width) of one deformed, posed slab."""
    pixel_mm = acq.field_of_view_mm / acq.image_size
    rows = (np.arange(height) - height / 2 + 0.5) * pixel_mm
    cols = (np.arange(acq.kspace_width) - acq.kspace_width / 2 + 0.5) * pixel_mm
    row_mm, col_mm = np.meshgrid(rows, cols, indexing="ij")

    angle = np.deg2rad(rng.uniform(-10, 10))
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-5, 5, size=2)
    x_mm = scale * (np.cos(angle) * col_mm - np.sin(angle) * row_mm) + shift[0]
    y_mm = -scale * (np.sin(angle) * col_mm + np.cos(angle) * row_mm) + shift[1]
    x_mm, y_mm = x_mm + HEAD_CENTER_MM[0], y_mm + HEAD_CENTER_MM[1]

    slab_shape = (acq.num_slices, height, acq.kspace_width)
    z_mm = slab_start_mm + acq.slice_spacing_mm * np.arange(acq.num_slices)
    coords = np.stack(
        [
            np.broadcast_to(x_mm, slab_shape) + MNI_ORIGIN_VOXEL[0],
            np.broadcast_to(y_mm, slab_shape) + MNI_ORIGIN_VOXEL[1],
            np.broadcast_to(z_mm[:, None, None], slab_shape) + MNI_ORIGIN_VOXEL[2],
        ]
    )
    # Smooth non-rigid deformation, up to about 4 mm, different in every volume.
    for axis in range(3):
        coords[axis] += 4.0 * smooth_field(rng, slab_shape, knots=4)
    return coords


def synthesize_slab(rng: np.random.Generator, acq: Acquisition) -> tuple[np.ndarray, str]:
    """One volume's complex image (slices, 2 * image_size, kspace_width) and its contrast name.

    The anatomy sits in the central image_size rows; the oversampled readout's outer rows are empty.
    """
    template = load_template()
    height = 2 * acq.image_size
    slab_mm = acq.slice_spacing_mm * (acq.num_slices - 1)
    slab_start = rng.uniform(-30.0, max(-30.0, 60.0 - slab_mm))
    coords = sampling_coordinates(rng, acq, height, slab_start)
    tissues = [
        ndimage.map_coordinates(tissue, coords, order=1, mode="constant", cval=0.0)
        for tissue in (template.gm, template.wm, template.csf)
    ]

    contrast = str(rng.choice(list(CONTRASTS)))
    intensities = np.array(CONTRASTS[contrast]) * rng.uniform(0.9, 1.1, size=3)
    magnitude = sum(weight * tissue for weight, tissue in zip(intensities, tissues, strict=True))

    shape = magnitude.shape
    bias = np.exp(0.25 * smooth_field(rng, shape, knots=3))
    phase = np.pi * 0.8 * smooth_field(rng, shape, knots=3)
    image = magnitude * bias * np.exp(1j * phase)
    return image.astype(np.complex64), contrast


def coil_sensitivities(
    rng: np.random.Generator, num_coils: int, shape: tuple[int, int]
) -> np.ndarray:
    """Smooth complex sensitivities (coils, H, W) of coils on a ring, RSS about 1 at the center."""
    height, width = shape
    rows, cols = np.meshgrid(
        np.arange(height) - height / 2, np.arange(width) - width / 2, indexing="ij"
    )
    # The anatomy fills the central half of the oversampled readout: place the ring around it.
    radius = 0.6 * max(height / 2, width)
    offset = rng.uniform(0, 2 * np.pi)
    maps = []
    for coil in range(num_coils):
        angle = offset + 2 * np.pi * coil / num_coils
        center_row, center_col = radius / 2 * np.sin(angle), radius * np.cos(angle)
        distance2 = (rows - center_row) ** 2 + (cols - center_col) ** 2
        magnitude = np.exp(-distance2 / (2 * (0.7 * radius) ** 2))
        phase = rng.uniform(0, 2 * np.pi) + 0.5 * np.pi * smooth_field(rng, shape, knots=2)
        maps.append(magnitude * np.exp(1j * phase))
    maps = np.stack(maps)
    center_rss = np.sqrt((np.abs(maps[:, height // 2, width // 2]) ** 2).sum())
    return (maps / center_rss).astype(np.complex64)


def fft2c(image: np.ndarray) -> np.ndarray:
    """Centered orthonormal 2-D FFT over the last two axes (fastmri.fft2c's convention)."""
    shifted = np.fft.ifftshift(image, axes=(-2, -1))
    return np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centered orthonormal 2-D inverse FFT over the last two axes."""
    shifted = np.fft.ifftshift(kspace, axes=(-2, -1))
    return np.fft.fftshift(np.fft.ifft2(shifted, norm="ortho"), axes=(-2, -1))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Crop the last two axes to size x size around their centers."""
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def acquire(
    rng: np.random.Generator, image: np.ndarray, acq: Acquisition
) -> tuple[np.ndarray, np.ndarray]:
    """Acquire a complex image slab like a scanner; return (kspace, target).

    kspace: (slices, H, W) single-coil or (slices, coils, H, W) multi-coil, complex64, with zero
    padded phase-encode edges and noise on the measured columns. target: (slices, size, size)
    float32, the magnitude (single-coil) or root-sum-of-squares (multi-coil) of the fully sampled
    zero-filled image cropped to the target size, as in the release.
    """
    image = image * (acq.signal_scale * rng.uniform(0.5, 2.0) / np.abs(image).max())
    magnitude = np.abs(image)
    sigma = magnitude[magnitude > 0.1 * magnitude.max()].mean() / acq.snr
    if acq.num_coils > 1:
        maps = coil_sensitivities(rng, acq.num_coils, image.shape[-2:])
        image = image[:, None] * maps[None]
    kspace = fft2c(image)

    width = acq.kspace_width
    left = width // 2 - acq.acquired_columns // 2
    measured = np.zeros(width, dtype=bool)
    measured[left : left + acq.acquired_columns] = True
    noise = rng.standard_normal(kspace.shape + (2,), dtype=np.float32) * (sigma / np.sqrt(2))
    kspace = (kspace + noise[..., 0] + 1j * noise[..., 1]) * measured
    kspace = kspace.astype(np.complex64)

    coil_images = np.abs(center_crop(ifft2c(kspace), acq.image_size))
    target = np.sqrt((coil_images**2).sum(axis=1)) if acq.num_coils > 1 else coil_images
    return kspace, target.astype(np.float32)
