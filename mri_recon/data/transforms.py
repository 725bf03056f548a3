"""Masked k-space -> normalized zero-filled image, with fastmri's masks and conventions.

The image equals fastmri's ``ifft2c`` -> ``complex_center_crop`` -> ``complex_abs`` (-> ``rss``)
of the masked k-space to float32 round-off, computed cheaper: the readout (rows, fully sampled
and 2x oversampled) is inverse-transformed for the sampled columns only and cropped to the target
rows before the phase-encode (column) inverse FFT.

Validation and test masks are seeded from the file name (as fastmri's ``use_seed=True``), so every
evaluation sees the same mask for a volume. Training masks come from the mask function's own random
stream, which the training loader (``loaders.SeededMasks``) reseeds for every slice from the run's
seed, the epoch and the slice's index.

With ``on_device=True`` the workers only read and mask; ``DeviceTransform`` then makes the images
of a whole batch on the training device.
"""

import functools
from typing import Any, NamedTuple

import numpy as np
import scipy.fft
import torch
from fastmri.data.subsample import MaskFunc
from fastmri.data.transforms import center_crop

from mri_recon.fourier import ifftc

NORMALIZE_EPS = 1e-11
EMPTY = torch.zeros(0)  # a field a sample does not carry (never written to)


class Sample(NamedTuple):
    """One slice ready for the U-Net and for evaluation.

    image: (1, h, w) zero-filled magnitude, normalized by its own mean and std; (0,) when made
        on the device (``on_device``), until ``DeviceTransform`` fills it in.
    target: (1, h, w) ground truth normalized with the same mean and std (on the device: not
        yet normalized); (0,) for test files.
    mean, std: scalars to undo the normalization (x * std + mean).
    fname, slice_num: where the slice came from.
    max_value: the volume's maximum (attrs["max"]), 0.0 when the file has none.
    masked_kspace: (H, W) or (coils, H, W) complex64 masked k-space, and mask: (W,) the sampled
        columns, both only with ``keep_kspace=True`` (k-space models, the TV baseline) or
        ``on_device``, else (0,).
    num_low_frequencies: the fully sampled center columns of the mask (0: not known).

    Only image and target are required: a batch made elsewhere (a benchmark's) can be just those.
    """

    image: torch.Tensor
    target: torch.Tensor
    mean: torch.Tensor = EMPTY
    std: torch.Tensor = EMPTY
    fname: str = ""
    slice_num: int = 0
    max_value: float = 0.0
    masked_kspace: torch.Tensor = EMPTY
    mask: torch.Tensor = EMPTY
    num_low_frequencies: int = 0


def file_seed(fname: str) -> tuple[int, ...]:
    """The mask seed fastmri derives from a file name: one fixed mask per volume."""
    return tuple(map(ord, fname))


def crop_size(width: int, target: np.ndarray | None, attrs: dict[str, Any]) -> tuple[int, int]:
    """The (h, w) the image is cropped to: the target's, else the header's recon size; square
    at the k-space width when that is narrower (fastMRI brain files, e.g. FLAIR 203)."""
    crop = tuple(target.shape[-2:]) if target is not None else tuple(attrs["recon_size"][:2])
    return (width, width) if width < crop[1] else crop


def zero_filled_image(
    kspace: np.ndarray, columns: np.ndarray, crop: tuple[int, int], multicoil: bool
) -> torch.Tensor:
    """The (h, w) zero-filled magnitude (RSS over coils) of one slice, on the CPU.

    kspace: (H, W) or (coils, H, W) complex64, of which the nonzero ``columns`` (W,) count.
    Equals |complex_center_crop(ifft2c(kspace * mask), crop)| (RSS over coils) to float32
    round-off, for a fraction of the work: the readout (rows) is inverse-transformed for the
    sampled columns only and cropped to h rows; the phase-encode transform is then one matrix
    product from the sampled columns to the w kept ones.
    """
    height, width = kspace.shape[-2:]
    coils = kspace.reshape(-1, height, width)
    sampled = np.flatnonzero(columns)
    lines = np.ascontiguousarray(np.take(coils, sampled, axis=-1).transpose(0, 2, 1))
    # scipy's single-threaded FFT: torch's multi-threaded CPU FFT was seen to return results
    # off by ~1e-3 now and then on this project's machines.
    lines = scipy.fft.ifft(np.fft.ifftshift(lines, axes=-1), norm="ortho")  # (coils, n, H)
    lines = np.take(lines, shifted_center(height, crop[0]), axis=-1)  # (coils, n, h)
    lines = np.ascontiguousarray(lines.transpose(0, 2, 1)).reshape(-1, len(sampled))
    # torch's matrix product: it keeps to torch's thread count (1 in DataLoader workers), where
    # numpy's BLAS would start threads of its own that fight the training for the cores.
    transform = torch.from_numpy(column_transform(width, crop[1])[sampled])
    images = (torch.from_numpy(lines) @ transform).numpy()  # (coils * h, w)
    pairs = images.view(np.float32).reshape(coils.shape[0], crop[0], 2 * crop[1])
    power = np.einsum("chw,chw->hw", pairs, pairs)  # re^2 + im^2 summed over coils
    return torch.from_numpy(np.sqrt(power[:, 0::2] + power[:, 1::2]))


def shifted_center(size: int, keep: int) -> np.ndarray:
    """Indices of an unshifted transform's output that are the ``keep`` central entries of its
    fftshifted version (fftshift, then center crop, without the copies)."""
    return (np.arange(keep) + (size - keep) // 2 - size // 2) % size


@functools.lru_cache(maxsize=8)
def column_transform(width: int, keep: int) -> np.ndarray:
    """(width, keep) complex64: row c maps k-space column c to the ``keep`` central image
    columns of the centered orthonormal inverse DFT (ifftshift, ifft, fftshift, crop)."""
    inputs = (np.arange(width) - width // 2) % width  # where ifftshift puts column c
    outputs = shifted_center(width, keep)
    phase = 2 * np.pi * (np.outer(inputs, outputs) % width) / width
    return (np.exp(1j * phase) / np.sqrt(width)).astype(np.complex64)


def magnitude(images: torch.Tensor, multicoil: bool) -> torch.Tensor:
    """|images| (..., h, w), or the root-sum-of-squares over coils (dim -3) for multi-coil."""
    if multicoil:
        return (images.real.square() + images.imag.square()).sum(dim=-3).sqrt()
    return images.abs()


def coil_images(kspace: torch.Tensor, columns: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """Cropped complex images (B, ..., h, w) of a batch of k-space (B, ..., H, W) masked by
    ``columns`` (B, W): ``complex_center_crop(ifft2c(kspace * mask), crop)``, with the rows
    cropped between the readout and the phase-encode FFTs (for ``DeviceTransform``)."""
    height, width = kspace.shape[-2:]
    top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
    mask = columns.reshape(*columns.shape[:-1], *[1] * (kspace.dim() - columns.dim()), width)
    grid = ifftc(kspace * mask, dim=-2)[..., top : top + crop[0], :]
    return ifftc(grid, dim=-1)[..., left : left + crop[1]]


def normalize_images(
    image: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fastmri's ``normalize_instance``: (image, target) of shape (..., h, w) minus the image's
    mean, over its std (unbiased) + eps; returns them with that mean and std (shape (...))."""
    mean = image.mean(dim=(-2, -1))
    std = image.std(dim=(-2, -1))
    scale = (std + NORMALIZE_EPS)[..., None, None]
    target = (target - mean[..., None, None]) / scale if target.numel() else target
    return (image - mean[..., None, None]) / scale, target, mean, std


class ZeroFilledTransform:
    """fastMRI-layout slice -> ``Sample`` (mask, IFFT, crop, magnitude or RSS, normalize)."""

    def __init__(
        self,
        challenge: str,
        mask_func: MaskFunc | None,
        fixed_masks: bool,
        keep_kspace: bool = False,
        on_device: bool = False,
    ) -> None:
        """
        Args:
            challenge: "singlecoil" (magnitude) or "multicoil" (root-sum-of-squares over coils).
            mask_func: column mask to apply; None uses the k-space as stored (test files, whose
                k-space is already undersampled, always do).
            fixed_masks: seed each file's mask from its name (validation/test) instead of drawing
                a fresh random mask per sample (training).
            keep_kspace: also return the masked k-space and the mask (for the TV baseline).
            on_device: only read and mask; ``DeviceTransform`` makes the images later.
        """
        if challenge not in ("singlecoil", "multicoil"):
            raise ValueError(f"challenge must be 'singlecoil' or 'multicoil', got {challenge!r}")
        self.challenge = challenge
        self.mask_func = mask_func
        self.fixed_masks = fixed_masks
        self.keep_kspace = keep_kspace or on_device
        self.on_device = on_device

    def reseed(self, seed: int | list[int]) -> None:
        """Restart the random training-mask stream (``loaders.SeededMasks``: once per slice)."""
        if self.mask_func is not None:
            self.mask_func.rng = np.random.RandomState(
                np.random.SeedSequence(seed).generate_state(4)
            )

    def columns(
        self, width: int, mask: np.ndarray | None, attrs: dict[str, Any], fname: str
    ) -> tuple[torch.Tensor, int]:
        """(W,) float32 sampled columns and how many center columns are fully sampled: the
        stored mask (and ``num_low_frequency`` attr), else one drawn exactly as fastmri's
        ``apply_mask`` draws it (padding columns zeroed), else all columns (0: unknown)."""
        if mask is not None:
            stored = int(attrs.get("num_low_frequency", 0))
            return torch.from_numpy(np.asarray(mask, dtype=np.float32)), stored
        if self.mask_func is None:
            return torch.ones(width), 0
        seed = file_seed(fname) if self.fixed_masks else None
        drawn, num_low = self.mask_func((1, 1, width, 2), None, seed)
        drawn[..., : attrs["padding_left"], :] = 0
        drawn[..., attrs["padding_right"] :, :] = 0
        return drawn.reshape(width).float(), int(num_low)

    def __call__(
        self,
        kspace: np.ndarray,
        mask: np.ndarray | None,
        target: np.ndarray | None,
        attrs: dict[str, Any],
        fname: str,
        slice_num: int,
    ) -> Sample:
        """
        Args:
            kspace: (H, W) single-coil or (coils, H, W) multi-coil complex k-space.
            mask: the stored column mask of a test file, else None.
            target: (h, w) ground truth, or None for test files.
            attrs: file attributes plus the header's padding_left/padding_right/recon_size.
        """
        kspace = np.asarray(kspace, dtype=np.complex64)
        columns, num_low = self.columns(kspace.shape[-1], mask, attrs, fname)
        crop = crop_size(kspace.shape[-1], target, attrs)
        target_t = torch.zeros(0)
        if target is not None:
            target_t = center_crop(torch.from_numpy(target), crop).unsqueeze(0)
        empty = torch.zeros(0)
        image, mean, std = empty, empty, empty
        if not self.on_device:
            multicoil = self.challenge == "multicoil"
            image = zero_filled_image(kspace, columns.numpy(), crop, multicoil)
            image, target_t, mean, std = normalize_images(image.unsqueeze(0), target_t)
            mean, std = mean[0], std[0]
        return Sample(
            image=image,
            target=target_t,
            mean=mean,
            std=std,
            fname=fname,
            slice_num=slice_num,
            max_value=float(attrs.get("max", 0.0)),
            masked_kspace=torch.from_numpy(kspace * columns.numpy()) if self.keep_kspace else empty,
            mask=columns if self.keep_kspace else empty,
            num_low_frequencies=num_low,
        )


class DeviceTransform:
    """The zero-filled transform of a whole batch on the training device.

    Workers built with ``on_device=True`` yield masked k-space (B, [coils,] H, W), masks (B, W)
    and cropped targets (B, 1, h, w); this makes the same normalized images and targets the
    workers would have made.
    """

    def __init__(self, challenge: str, device: torch.device) -> None:
        self.multicoil = challenge == "multicoil"
        self.device = device

    def __call__(self, batch: Sample) -> Sample:
        target = batch.target.to(self.device, non_blocking=True)
        crop = tuple(target.shape[-2:])
        if isinstance(batch.masked_kspace, list):  # k-space widths differ within the batch
            pairs = zip(batch.masked_kspace, batch.mask, strict=True)
            image = torch.cat(
                [self.images(kspace[None], mask[None], crop) for kspace, mask in pairs]
            )
        else:
            image = self.images(batch.masked_kspace, batch.mask, crop)
        image, target, mean, std = normalize_images(image.unsqueeze(1), target)
        return batch._replace(image=image, target=target, mean=mean[:, 0], std=std[:, 0])

    def images(
        self, kspace: torch.Tensor, mask: torch.Tensor, crop: tuple[int, int]
    ) -> torch.Tensor:
        """(B, h, w) zero-filled magnitudes of (B, [coils,] H, W) k-space and (B, W) masks."""
        kspace = kspace.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        return magnitude(coil_images(kspace, mask, crop), self.multicoil)


def device_collate(samples: list[Sample]) -> Sample:
    """Collate samples holding k-space; k-space of different widths (release knee files are 368
    or 372 wide) stays a list of (…, H, W) tensors, which ``DeviceTransform`` and k-space
    models take one by one."""
    if len({tuple(sample.masked_kspace.shape) for sample in samples}) == 1:
        return torch.utils.data.default_collate(samples)
    empty = torch.zeros(0)
    batch = torch.utils.data.default_collate(
        [sample._replace(masked_kspace=empty, mask=empty) for sample in samples]
    )
    kspace = [sample.masked_kspace for sample in samples]
    return batch._replace(masked_kspace=kspace, mask=[sample.mask for sample in samples])
