"""The demo dataset: synthetic volumes written in the exact fastMRI layout (`mri-recon-data`).

Every split and challenge of ``configs/data_gen.yaml``; the same seed gives byte-identical files.
"""

from pathlib import Path

import numpy as np
from fastmri.data.subsample import EquispacedMaskFractionFunc, MaskFunc, RandomMaskFunc
from omegaconf import DictConfig
from tqdm import tqdm

from mri_recon.data.dataset import TARGET_KEYS, write_layout_file
from mri_recon.data.demo import Acquisition, acquire, synthesize_slab
from mri_recon.data.header import build_header
from mri_recon.errors import UserError

SPLITS = ("train", "val", "test")
CHALLENGES = tuple(TARGET_KEYS)


def acquisition_for(cfg: DictConfig, challenge: str) -> Acquisition:
    """The acquisition settings of one challenge (single-coil has one coil)."""
    return Acquisition(
        image_size=cfg.image_size,
        kspace_width=cfg.kspace_width,
        acquired_columns=cfg.acquired_columns,
        field_of_view_mm=cfg.field_of_view_mm,
        num_slices=cfg.num_slices,
        slice_spacing_mm=cfg.slice_spacing_mm,
        snr=cfg.snr,
        signal_scale=cfg.signal_scale,
        num_coils=1 if challenge == "singlecoil" else cfg.num_coils,
        supersampling=cfg.supersampling,
    )


def check_config(cfg: DictConfig) -> None:
    """Reject sizes that cannot make a valid file, before any work starts."""
    if not cfg.image_size <= cfg.acquired_columns <= cfg.kspace_width:
        raise UserError(
            f"expected image_size <= acquired_columns <= kspace_width, got {cfg.image_size}, "
            f"{cfg.acquired_columns}, {cfg.kspace_width}"
        )
    for challenge in cfg.challenges:
        if challenge not in CHALLENGES:
            raise UserError(f"challenges: expected entries from {CHALLENGES}, got {challenge!r}")
    if cfg.snr <= 0 or cfg.num_coils < 2 or cfg.num_slices < 1 or cfg.supersampling < 1:
        raise UserError(
            "expected snr > 0, num_coils >= 2, num_slices >= 1 and supersampling >= 1, got "
            f"{cfg.snr}, {cfg.num_coils}, {cfg.num_slices}, {cfg.supersampling}"
        )


def test_mask_func(challenge: str, acceleration: int, center_fraction: float) -> MaskFunc:
    """The release's test masks: random columns single-coil, equispaced multi-coil."""
    mask_class = RandomMaskFunc if challenge == "singlecoil" else EquispacedMaskFractionFunc
    return mask_class([center_fraction], [acceleration])


def undersample_for_test(
    kspace: np.ndarray, name: str, challenge: str, index: int, cfg: DictConfig
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Undersample a test volume with a mask seeded by its file name, as the release did."""
    choice = index % len(cfg.test_masks.accelerations)
    acceleration = int(cfg.test_masks.accelerations[choice])
    center_fraction = float(cfg.test_masks.center_fractions[choice])
    shape = (1,) * (kspace.ndim - 2) + (kspace.shape[-1], 1)
    mask, num_low = test_mask_func(challenge, acceleration, center_fraction)(
        shape, seed=tuple(map(ord, name))
    )
    columns = mask.numpy().reshape(-1).astype(bool)
    attrs = {"acceleration": acceleration, "num_low_frequency": int(num_low)}
    return (kspace * columns).astype(np.complex64), columns, attrs


def generate(cfg: DictConfig) -> list[Path]:
    """Write every split and challenge; return the files written."""
    check_config(cfg)
    out = Path(cfg.out)
    volumes = [(split, index) for split in SPLITS for index in range(cfg.volumes[split])]
    written = []
    for split, index in tqdm(volumes, desc=f"demo data -> {out}", unit="volume"):
        split_id = SPLITS.index(split)
        slab_rng = np.random.default_rng([cfg.seed, split_id, index])
        image, contrast = synthesize_slab(slab_rng, acquisition_for(cfg, "singlecoil"))
        patient_id = f"demo{slab_rng.integers(16**12):012x}"
        for challenge in cfg.challenges:
            acq = acquisition_for(cfg, challenge)
            rng = np.random.default_rng([cfg.seed, split_id, index, CHALLENGES.index(challenge)])
            kspace, target = acquire(rng, image, acq)
            name = f"file_demo_{split}{index:03d}.h5"
            header = build_header(
                (kspace.shape[-2], kspace.shape[-1]),
                (acq.image_size, acq.image_size),
                acq.acquired_columns,
                (acq.field_of_view_mm, acq.field_of_view_mm * acq.kspace_width / acq.image_size),
                acq.num_coils,
            )
            attrs = {"acquisition": contrast, "patient_id": patient_id}
            folder = out / f"{challenge}_{split}"
            folder.mkdir(parents=True, exist_ok=True)
            if split == "test":
                kspace, mask, test_attrs = undersample_for_test(kspace, name, challenge, index, cfg)
                attrs.update(test_attrs)
                write_layout_file(folder / name, {"kspace": kspace, "mask": mask}, header, attrs)
            else:
                attrs.update(max=float(target.max()), norm=float(np.linalg.norm(target)))
                arrays = {"kspace": kspace, TARGET_KEYS[challenge]: target}
                write_layout_file(folder / name, arrays, header, attrs)
            written.append(folder / name)
    return written
