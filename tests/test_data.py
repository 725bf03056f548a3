"""The data layer: header, padding, masks, transforms, test files, fastmri compatibility."""

import shutil
from pathlib import Path

import fastmri.data
import h5py
import numpy as np
import pytest
import torch
from fastmri.data.subsample import RandomMaskFunc
from fastmri.data.transforms import UnetDataTransform
from omegaconf import OmegaConf

from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.data.header import build_header, parse_header
from mri_recon.data.loaders import build_loader, build_mask_func, start_worker
from mri_recon.data.transforms import ZeroFilledTransform
from mri_recon.errors import DataError, UserError

from .conftest import make_tiny_data


def dataset(
    root: Path,
    challenge: str,
    split: str,
    mask=None,
    fixed=True,
    sample_rate=1.0,
    volume_sample_rate=1.0,
    **kwargs,
) -> SliceDataset:
    transform = ZeroFilledTransform(challenge, mask, fixed_masks=fixed)
    folder = split_folder(root, challenge, split)
    items = SliceDataset(folder, challenge, transform, require_target=split != "test", **kwargs)
    items.subsample(sample_rate, volume_sample_rate, seed=0)
    return items


def test_header_round_trip_gives_release_padding() -> None:
    header = build_header((640, 368), (320, 320), 348, (160.0, 184.0), 15)
    info = parse_header(header)
    assert info.encoding_size == (640, 368, 1)
    assert info.recon_size == (320, 320, 1)
    assert (info.padding_left, info.padding_right) == (10, 358)


def test_header_missing_element_is_named() -> None:
    header = build_header((64, 40), (32, 32), 36, (100.0, 125.0), 1).replace(
        b"<center>18</center>", b""
    )
    with pytest.raises(ValueError, match="kspace_encoding_step_1/center"):
        parse_header(header)


def test_fastmri_reads_demo_files_unchanged(tiny_root: Path) -> None:
    for challenge in ("singlecoil", "multicoil"):
        for split in ("train", "val", "test"):
            ours = dataset(tiny_root, challenge, split)
            theirs = fastmri.data.SliceDataset(split_folder(tiny_root, challenge, split), challenge)
            assert len(theirs) == len(ours) > 0
            meta = theirs.raw_samples[0].metadata
            attrs = ours.metadata[theirs.raw_samples[0].fname.name]
            assert (meta["padding_left"], meta["padding_right"]) == (2, 38)
            assert meta["recon_size"] == (32, 32, 1) == tuple(attrs["recon_size"])
            assert meta["encoding_size"] == (64, 40, 1)
            kspace, mask, target, *_ = theirs[0]
            assert kspace.dtype == np.complex64
            assert (target is None) == (split == "test") == (mask is not None)


def test_padded_columns_are_zero_and_measured_ones_are_not(tiny_root: Path) -> None:
    path = next(split_folder(tiny_root, "multicoil", "train").glob("*.h5"))
    with h5py.File(path) as file:
        kspace = file["kspace"][()]
        assert kspace.shape == (3, 4, 64, 40)
        assert file["reconstruction_rss"].shape == (3, 32, 32)
        assert 1e-7 < float(file.attrs["max"]) < 1e-2  # scanner-like small units
    energy = np.abs(kspace).sum(axis=(0, 1, 2))
    assert np.all(energy[:2] == 0) and np.all(energy[38:] == 0)
    assert np.all(energy[2:38] > 0)


def test_fully_sampled_input_reproduces_target(tiny_root: Path) -> None:
    for challenge in ("singlecoil", "multicoil"):
        sample = dataset(tiny_root, challenge, "val")[1]
        assert sample.image.shape == sample.target.shape == (1, 32, 32)
        torch.testing.assert_close(sample.image, sample.target, atol=1e-4, rtol=1e-4)
        assert abs(float(sample.image.mean())) < 1e-5
        assert abs(float(sample.image.std()) - 1) < 1e-3


def test_transform_matches_fastmri_unet_transform(tiny_root: Path) -> None:
    for challenge in ("singlecoil", "multicoil"):
        mask = RandomMaskFunc([0.08], [4])
        ours = dataset(tiny_root, challenge, "val", mask)
        theirs = fastmri.data.SliceDataset(
            split_folder(tiny_root, challenge, "val"),
            challenge,
            UnetDataTransform(challenge, RandomMaskFunc([0.08], [4]), use_seed=True),
        )
        for index in (0, 4):
            a, b = ours[index], theirs[index]
            torch.testing.assert_close(a.image[0].clamp(-6, 6), b.image)
            torch.testing.assert_close(a.target[0].clamp(-6, 6), b.target)
            assert a.max_value == b.max_value and a.fname == b.fname


def test_masks_keep_center_and_hit_the_acceleration() -> None:
    mask_func = build_mask_func(
        OmegaConf.create(
            {
                "_target_": "fastmri.data.subsample.RandomMaskFunc",
                "center_fractions": [0.08],
                "accelerations": [4],
            }
        )
    )
    width = 368
    masks = torch.stack([mask_func((1, width, 1))[0].reshape(-1) for _ in range(400)])
    center = round(width * 0.08)
    start = (width - center + 1) // 2
    assert torch.all(masks[:, start : start + center] == 1)
    assert abs(width / masks.sum(dim=1).mean().item() - 4) < 0.1


def test_mask_config_rejects_bad_values() -> None:
    base = {"_target_": "fastmri.data.subsample.RandomMaskFunc"}
    with pytest.raises(UserError, match="center_fractions"):
        build_mask_func(OmegaConf.create({**base, "center_fractions": [1.5], "accelerations": [4]}))
    with pytest.raises(UserError, match="accelerations"):
        build_mask_func(
            OmegaConf.create({**base, "center_fractions": [0.08], "accelerations": [0]})
        )
    with pytest.raises(UserError, match="same length"):
        build_mask_func(
            OmegaConf.create({**base, "center_fractions": [0.08], "accelerations": [4, 8]})
        )


def test_validation_masks_fixed_training_masks_random(tiny_root: Path) -> None:
    fixed = dataset(tiny_root, "singlecoil", "val", RandomMaskFunc([0.08], [4]), fixed=True)
    again = dataset(tiny_root, "singlecoil", "val", RandomMaskFunc([0.08], [4]), fixed=True)
    torch.testing.assert_close(fixed[0].image, again[0].image)
    torch.testing.assert_close(fixed[0].image, fixed[0].image)
    random_masks = dataset(tiny_root, "singlecoil", "val", RandomMaskFunc([0.08], [4]), fixed=False)
    assert not torch.equal(random_masks[0].image, random_masks[0].image)


def test_dataloader_workers_draw_distinct_mask_streams(tiny_root: Path) -> None:
    train = dataset(tiny_root, "singlecoil", "train", RandomMaskFunc([0.08], [4]), fixed=False)
    train.slices = [train.slices[0]] * 8  # the same slice eight times: only the mask differs
    cfg = OmegaConf.create({"batch_size": 1, "num_workers": 2})
    loader = build_loader(train, cfg)  # in order
    images = [batch.image[0, 0] for batch in loader]  # workers alternate: 0, 1, 0, 1, ...
    worker0, worker1 = images[0::2], images[1::2]
    for a, b in zip(worker0, worker1, strict=True):
        assert not torch.equal(a, b)
    assert not torch.equal(worker0[0], worker0[1])
    assert start_worker.__doc__  # the loader's worker_init_fn


def test_test_files_use_their_stored_mask(tiny_root: Path) -> None:
    for challenge in ("singlecoil", "multicoil"):
        folder = split_folder(tiny_root, challenge, "test")
        # A mask function is configured, yet the stored mask must win for test files.
        test = dataset(tiny_root, challenge, "test", RandomMaskFunc([0.5], [1]))
        sample = test[0]
        assert sample.image.shape == (1, 32, 32) and sample.target.numel() == 0
        with h5py.File(folder / sample.fname) as file:
            mask = file["mask"][()]
            kspace = file["kspace"][()]
            assert file.attrs["acceleration"] in (4, 8)
            assert "reconstruction_esc" not in file and "reconstruction_rss" not in file
        assert mask.dtype == bool and mask.shape == (40,)
        assert np.all(kspace[..., ~mask] == 0)
        assert 2 <= kspace.shape[-1] / mask.sum() <= 10


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    first = make_tiny_data(tmp_path / "a", extra=("volumes.train=1", "volumes.test=1"))
    second = make_tiny_data(tmp_path / "b", extra=("volumes.train=1", "volumes.test=1"))
    other = make_tiny_data(tmp_path / "c", seed=1, extra=("volumes.train=1", "volumes.test=1"))
    assert len(first) == len(second) > 0
    for a, b, c in zip(first, second, other, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_splits_hold_distinct_anatomy(tiny_root: Path) -> None:
    targets = []
    for split in ("train", "val"):
        for path in sorted(split_folder(tiny_root, "singlecoil", split).glob("*.h5")):
            with h5py.File(path) as file:
                target = file["reconstruction_esc"][()]
                targets.append(target / target.max())
    for i in range(len(targets)):
        for j in range(i + 1, len(targets)):
            assert np.abs(targets[i] - targets[j]).mean() > 0.01


def test_sample_rates_are_seeded_subsets(tiny_root: Path) -> None:
    half = dataset(tiny_root, "singlecoil", "train", sample_rate=0.5)
    assert half.slices == dataset(tiny_root, "singlecoil", "train", sample_rate=0.5).slices
    assert len(half) == round(9 * 0.5)
    volumes = dataset(tiny_root, "singlecoil", "train", volume_sample_rate=0.34)
    assert len({path for path, _ in volumes.slices}) == 1 and len(volumes) == 3


def test_metadata_cache_is_rebuilt_when_a_file_changes(tiny_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "singlecoil_train"
    shutil.copytree(split_folder(tiny_root, "singlecoil", "train"), folder)
    cache = tmp_path / "cache"
    assert len(dataset(tmp_path, "singlecoil", "train", cache_dir=cache)) == 9
    assert len(list(cache.glob("*.json"))) == 1
    path = sorted(folder.glob("*.h5"))[0]
    with h5py.File(path, "a") as file:  # drop a slice: the cached slice count is now stale
        for key in ("kspace", "reconstruction_esc"):
            data = file[key][:2]
            del file[key]
            file.create_dataset(key, data=data)
    assert len(dataset(tmp_path, "singlecoil", "train", cache_dir=cache)) == 8


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing_folder", "does not exist"),
        ("empty_folder", "no .h5 files"),
        ("not_hdf5", "not a readable HDF5 file"),
        ("no_kspace", "no 'kspace' dataset"),
        ("no_target", "no 'reconstruction_esc' target"),
    ],
)
def test_bad_input_names_the_file(
    tiny_root: Path, tmp_path: Path, breakage: str, message: str
) -> None:
    folder = tmp_path / "singlecoil_train"
    if breakage != "missing_folder":
        folder.mkdir()
    source = next(split_folder(tiny_root, "singlecoil", "train").glob("*.h5"))
    bad = folder / "file_bad.h5"
    if breakage == "not_hdf5":
        bad.write_text("this is not HDF5")
    elif breakage in ("no_kspace", "no_target"):
        shutil.copy(source, bad)
        with h5py.File(bad, "a") as file:
            del file["kspace" if breakage == "no_kspace" else "reconstruction_esc"]
    root = tmp_path / "nowhere" if breakage == "missing_folder" else tmp_path
    with pytest.raises(DataError, match=message) as error:
        dataset(root, "singlecoil", "train")
    if breakage not in ("missing_folder", "empty_folder"):
        assert str(bad) in str(error.value)
    assert "\n" not in str(error.value)
