"""Synthesis of a realistic demo head from the MNI ICBM152 2009 brain template.

Each volume is a slab of axial slices through a whole head: the template's grey matter, white matter
and CSF inside the brain, and around its envelope the CSF rim, the skull (cortical tables and
marrow), subcutaneous fat and skin, with layer thicknesses that vary smoothly around the head and
from volume to volume. Every tissue has T1-, T2- or PD-like intensity with a random spread, and a
fine multiplicative texture. There is no "inverse crime": the object is made at ``supersampling``
(default 2) times the reconstructed resolution in both directions, and its k-space is truncated to
the acquired matrix before noise is added, so targets carry the ringing, partial volume and noise
floor of a real scan.
The slab is acquired like the fastMRI release: 2x oversampled readout, zero-padded phase-encode
edges, small scanner-like units, complex Gaussian k-space noise, and for multi-coil smooth coil
sensitivities. Everything here is numpy; ``demo_dataset.py`` writes the arrays into fastMRI-layout
files.
"""

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import torch
from scipy import ndimage

from mri_recon.data.target import center_crop, target_image
from mri_recon.fourier import fft2c

TEMPLATE_FILES = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# Voxel index of the MNI origin in the 1 mm template (its affine's translation, negated).
MNI_ORIGIN_VOXEL = np.array([98.0, 134.0, 72.0])
# The image center in MNI millimetres: roughly the middle of the head in x and y.
HEAD_CENTER_MM = np.array([0.0, -18.0])

# The layers outside the brain envelope, inside out, with their typical thickness in mm.
HEAD_LAYERS_MM = (
    ("csf", 2.0),
    ("bone", 2.0),  # inner table
    ("marrow", 3.0),  # diploe
    ("bone", 2.0),  # outer table
    ("fat", 4.0),  # subcutaneous fat
    ("skin", 2.5),
)
TISSUES = ("gm", "wm", "csf", "bone", "marrow", "fat", "skin")
# Mean intensity of every tissue (in TISSUES' order) in the three synthetic contrasts.
CONTRASTS = {
    "AXT1": (0.55, 0.85, 0.12, 0.03, 0.60, 1.00, 0.55),
    "AXT2": (0.60, 0.42, 1.00, 0.03, 0.35, 0.70, 0.35),
    "AXPD": (0.85, 0.70, 0.95, 0.05, 0.60, 0.90, 0.65),
}


@dataclass(frozen=True)
class Template:
    """Maps on the 1 mm MNI grid, each (197, 233, 189) float32: tissue probabilities of the brain
    in [0, 1], and the distance in mm outside its envelope (0 inside)."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    outside_mm: np.ndarray


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
    supersampling: int  # the object is drawn on a grid this many times finer; 1: inverse crime


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
    outside_mm = ndimage.distance_transform_edt(~brain).astype(np.float32)
    return Template(gm, wm, csf.astype(np.float32), outside_mm)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], knots: int) -> np.ndarray:
    """A smooth random field of ``shape`` in about [-1, 1]: cubic zoom of a coarse Gaussian grid.

    The zoom is separable, so it is applied one axis at a time as a (size, knots) matrix: the same
    field as ``ndimage.zoom(coarse, order=3, mode="nearest")``, without its per-point cost.
    """
    field = rng.standard_normal([knots] * len(shape))
    for axis, size in enumerate(shape):
        zoom = (size / knots, 1.0)
        basis = ndimage.zoom(np.eye(knots), zoom, order=3, mode="nearest")[:size]
        field = np.moveaxis(np.tensordot(basis, field, axes=([1], [axis])), 0, axis)
    return field


def fine_texture(
    rng: np.random.Generator, shape: tuple[int, ...], correlation_px: float
) -> np.ndarray:
    """In-plane Gaussian texture of ``shape`` (slices, H, W) with unit standard deviation and a
    correlation length (Gaussian sigma) of ``correlation_px`` pixels of this grid."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    texture = ndimage.gaussian_filter(noise, (0.0, correlation_px, correlation_px))
    # White noise of unit variance filtered by a 2-D Gaussian has std 1 / (2 sqrt(pi) sigma).
    return texture * (2.0 * np.sqrt(np.pi) * correlation_px)


def sampling_coordinates(
    rng: np.random.Generator, acq: Acquisition, shape: tuple[int, int], slab_start_mm: float
) -> np.ndarray:
    """Template voxel coordinates (3, slices, H, W) of one deformed, posed slab on the grid of
    ``shape`` = (H, W) pixels that spans the image's field of view in rows and the phase-encode
    field of view in columns."""
    height, width = shape
    row_mm_size = acq.field_of_view_mm / height
    col_mm_size = acq.field_of_view_mm * acq.kspace_width / acq.image_size / width
    rows = (np.arange(height) - height / 2 + 0.5) * row_mm_size
    cols = (np.arange(width) - width / 2 + 0.5) * col_mm_size
    row_mm, col_mm = np.meshgrid(rows, cols, indexing="ij")

    angle = np.deg2rad(rng.uniform(-10, 10))
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-5, 5, size=2)
    x_mm = scale * (np.cos(angle) * col_mm - np.sin(angle) * row_mm) + shift[0]
    y_mm = -scale * (np.sin(angle) * col_mm + np.cos(angle) * row_mm) + shift[1]
    x_mm, y_mm = x_mm + HEAD_CENTER_MM[0], y_mm + HEAD_CENTER_MM[1]

    slab_shape = (acq.num_slices, height, width)
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
    return coords.astype(np.float32)


def head_layers(
    rng: np.random.Generator, outside_mm: np.ndarray, brain: np.ndarray
) -> dict[str, np.ndarray]:
    """Fractions of the tissues outside the brain, each shaped like ``outside_mm`` (slices, H, W).

    ``brain`` is the fraction of brain tissue (grey, white matter and CSF) at every point. Layer k
    of HEAD_LAYERS_MM fills the distances between the cumulative thicknesses before and after it;
    the first fills what the brain leaves. Each thickness varies smoothly around the head (a random
    field) and per volume. Edges are 0.5 mm ramps, so the fractions carry partial volume.
    """
    around_head = 1.0 + 0.25 * smooth_field(rng, outside_mm.shape, knots=5)
    layers: dict[str, np.ndarray] = {}
    edge, inside_edge = np.zeros_like(outside_mm), brain
    for name, thickness in HEAD_LAYERS_MM:
        edge = edge + thickness * rng.uniform(0.8, 1.25) * around_head
        inside_next = np.clip((edge - outside_mm) / 0.5 + 0.5, 0.0, 1.0)
        layers[name] = layers.get(name, 0.0) + np.clip(inside_next - inside_edge, 0.0, 1.0)
        inside_edge = np.maximum(inside_next, inside_edge)
    return layers


def tissue_fractions(rng: np.random.Generator, coords: np.ndarray) -> dict[str, np.ndarray]:
    """Fractions of every tissue of TISSUES at template ``coords`` (3, slices, H, W)."""
    template = load_template()
    fractions = {
        name: ndimage.map_coordinates(getattr(template, name), coords, order=1, cval=0.0)
        for name in ("gm", "wm", "csf")
    }
    outside = ndimage.map_coordinates(template.outside_mm, coords, order=1, cval=1e3)
    brain = np.clip(fractions["gm"] + fractions["wm"] + fractions["csf"], 0.0, 1.0)
    layers = head_layers(rng, outside, brain)
    fractions["csf"] = fractions["csf"] + layers.pop("csf")
    return {**fractions, **layers}


def synthesize_slab(rng: np.random.Generator, acq: Acquisition) -> tuple[np.ndarray, str]:
    """One volume's complex object on the fine grid and its contrast name.

    The object is (slices, supersampling * 2 * image_size, supersampling * kspace_width): the
    oversampled readout's field of view, sampled supersampling times finer, with the anatomy in
    its central half of the rows (the outer rows are empty, as in the release).
    """
    fine = acq.supersampling
    slab_mm = acq.slice_spacing_mm * (acq.num_slices - 1)
    slab_start = rng.uniform(-15.0, max(-15.0, 55.0 - slab_mm))
    shape = (fine * acq.image_size, fine * acq.kspace_width)
    fractions = tissue_fractions(rng, sampling_coordinates(rng, acq, shape, slab_start))

    contrast = str(rng.choice(list(CONTRASTS)))
    intensities = np.array(CONTRASTS[contrast]) * rng.uniform(0.9, 1.1, size=len(TISSUES))
    correlation_px = fine * rng.uniform(0.5, 1.0)  # 1-2 reconstructed pixels of correlation length
    magnitude = np.zeros((acq.num_slices, *shape), dtype=np.float32)
    for name, intensity in zip(TISSUES, intensities, strict=True):
        amplitude = rng.uniform(0.02, 0.05)
        texture = 1.0 + amplitude * fine_texture(rng, magnitude.shape, correlation_px)
        magnitude += intensity * fractions[name] * texture

    bias = np.exp(0.25 * smooth_field(rng, magnitude.shape, knots=3))
    phase = np.pi * 0.8 * smooth_field(rng, magnitude.shape, knots=3)
    anatomy = (magnitude * bias * np.exp(1j * phase)).astype(np.complex64)
    rows = fine * acq.image_size // 2
    return np.pad(anatomy, ((0, 0), (rows, rows), (0, 0))), contrast


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


def truncated_kspace(obj: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The k-space of a finely sampled object, truncated to the acquired matrix ``shape`` (H, W).

    obj: (..., h, w) complex on a grid finer than ``shape`` over the same field of view. The
    result (..., H, W) is the k-space of the object as the coarse grid sees it: only its central
    frequencies, scaled so that the coarse image keeps the object's intensities.
    """
    scale = np.sqrt(obj.shape[-2] * obj.shape[-1] / (shape[0] * shape[1]))
    return center_crop(fft2c(torch.from_numpy(obj)).numpy(), shape) * scale


def measure(rng: np.random.Generator, obj: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Noise-free k-space (slices, [coils,] 2 * image_size, kspace_width) of the fine object
    (slices, h, w) through the coils' sensitivities, applied on the fine grid slice by slice."""
    shape = (2 * acq.image_size, acq.kspace_width)
    if acq.num_coils == 1:
        return truncated_kspace(obj, shape)
    maps = coil_sensitivities(rng, acq.num_coils, obj.shape[-2:])
    return np.stack([truncated_kspace(slice_ * maps, shape) for slice_ in obj])


def acquire(
    rng: np.random.Generator, obj: np.ndarray, acq: Acquisition
) -> tuple[np.ndarray, np.ndarray]:
    """Acquire a finely sampled complex object (slices, h, w) like a scanner; return (kspace,
    target).

    kspace: (slices, H, W) single-coil or (slices, coils, H, W) multi-coil, complex64, truncated
    to the acquired matrix, with zero padded phase-encode edges and noise on the measured columns.
    target: (slices, size, size) float32, the magnitude (single-coil) or root-sum-of-squares
    (multi-coil) of the fully sampled zero-filled image cropped to the target size, as in the
    release.
    """
    obj = obj * (acq.signal_scale * rng.uniform(0.5, 2.0) / np.abs(obj).max())
    magnitude = np.abs(obj)
    sigma = magnitude[magnitude > 0.1 * magnitude.max()].mean() / acq.snr
    kspace = measure(rng, obj, acq)

    width = acq.kspace_width
    left = width // 2 - acq.acquired_columns // 2
    measured = np.zeros(width, dtype=bool)
    measured[left : left + acq.acquired_columns] = True
    noise = rng.standard_normal(kspace.shape + (2,), dtype=np.float32) * (sigma / np.sqrt(2))
    kspace = (kspace + noise[..., 0] + 1j * noise[..., 1]) * measured
    kspace = kspace.astype(np.complex64)

    return kspace, target_image(kspace, (acq.image_size, acq.image_size))
