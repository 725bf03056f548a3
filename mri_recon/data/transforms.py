"""Masked k-space -> normalized zero-filled image, with fastmri's own transforms and masks.

Validation and test masks are seeded from the file name (as fastmri's ``use_seed=True``), so every
evaluation sees the same mask for a volume. Training masks come from the mask function's own random
stream, which ``seed_worker`` reseeds per DataLoader worker and per distributed rank.
"""

from typing import Any, NamedTuple

import fastmri
import numpy as np
import torch
from fastmri.data.subsample import MaskFunc
from fastmri.data.transforms import (
    apply_mask,
    center_crop,
    complex_center_crop,
    normalize,
    normalize_instance,
    to_tensor,
)

NORMALIZE_EPS = 1e-11


class Sample(NamedTuple):
    """One slice ready for the U-Net and for evaluation.

    image: (1, H, W) zero-filled magnitude, normalized by its own mean and std.
    target: (1, H, W) ground truth normalized with the same mean and std; (0,) for test files.
    mean, std: scalars to undo the normalization (x * std + mean).
    fname, slice_num: where the slice came from.
    max_value: the volume's maximum (attrs["max"]), 0.0 when the file has none.
    masked_kspace: (H, W) or (coils, H, W) complex64 masked k-space, and mask: (W,) the sampled
        columns, both only with ``keep_kspace=True`` (the TV baseline needs them), else (0,).
    """

    image: torch.Tensor
    target: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    fname: str
    slice_num: int
    max_value: float
    masked_kspace: torch.Tensor
    mask: torch.Tensor


def file_seed(fname: str) -> tuple[int, ...]:
    """The mask seed fastmri derives from a file name: one fixed mask per volume."""
    return tuple(map(ord, fname))


class ZeroFilledTransform:
    """fastMRI-layout slice -> ``Sample`` (mask, IFFT, crop, magnitude or RSS, normalize)."""

    def __init__(
        self,
        challenge: str,
        mask_func: MaskFunc | None,
        fixed_masks: bool,
        keep_kspace: bool = False,
    ) -> None:
        """
        Args:
            challenge: "singlecoil" (magnitude) or "multicoil" (root-sum-of-squares over coils).
            mask_func: column mask to apply; None uses the k-space as stored (test files, whose
                k-space is already undersampled, always do).
            fixed_masks: seed each file's mask from its name (validation/test) instead of drawing
                a fresh random mask per sample (training).
            keep_kspace: also return the masked k-space and the mask (for the TV baseline).
        """
        if challenge not in ("singlecoil", "multicoil"):
            raise ValueError(f"challenge must be 'singlecoil' or 'multicoil', got {challenge!r}")
        self.challenge = challenge
        self.mask_func = mask_func
        self.fixed_masks = fixed_masks
        self.keep_kspace = keep_kspace

    def reseed(self, seed: int | list[int]) -> None:
        """Restart the random training-mask stream (called once per DataLoader worker)."""
        if self.mask_func is not None:
            self.mask_func.rng = np.random.RandomState(
                np.random.SeedSequence(seed).generate_state(4)
            )

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
        kspace_t = to_tensor(kspace)  # (..., H, W, 2)
        if mask is not None:
            columns = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        elif self.mask_func is not None:
            seed = file_seed(fname) if self.fixed_masks else None
            padding = (attrs["padding_left"], attrs["padding_right"])
            kspace_t, mask_t, _ = apply_mask(kspace_t, self.mask_func, seed=seed, padding=padding)
            columns = mask_t.reshape(-1)
        else:
            columns = torch.ones(kspace_t.shape[-2])

        image = fastmri.ifft2c(kspace_t)
        crop = tuple(target.shape[-2:]) if target is not None else tuple(attrs["recon_size"][:2])
        if image.shape[-2] < crop[1]:  # fastMRI brain files narrower than the recon size
            crop = (image.shape[-2], image.shape[-2])
        image = fastmri.complex_abs(complex_center_crop(image, crop))
        if self.challenge == "multicoil":
            image = fastmri.rss(image, dim=0)

        image, mean, std = normalize_instance(image, eps=NORMALIZE_EPS)
        if target is not None:
            target_t = normalize(center_crop(to_tensor(target), crop), mean, std, NORMALIZE_EPS)
            target_t = target_t.unsqueeze(0)
        else:
            target_t = torch.zeros(0)
        return Sample(
            image=image.unsqueeze(0),
            target=target_t,
            mean=mean,
            std=std,
            fname=fname,
            slice_num=slice_num,
            max_value=float(attrs.get("max", 0.0)),
            masked_kspace=torch.view_as_complex(kspace_t) if self.keep_kspace else torch.zeros(0),
            mask=columns if self.keep_kspace else torch.zeros(0),
        )
