"""The bad-input catalogue: each case stops with one line naming the file (or key)."""

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from mri_recon.config import check_overrides
from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.errors import DataError, UserError

from .conftest import run_cli, train_in_process


def copy_split(
    tiny_root: Path, tmp_path: Path, challenge: str = "singlecoil", split: str = "train"
) -> Path:
    folder = tmp_path / f"{challenge}_{split}"
    shutil.copytree(split_folder(tiny_root, challenge, split), folder)
    return folder


def first_file(folder: Path) -> Path:
    return sorted(folder.glob("*.h5"))[0]


def rewrite(path: Path, key: str, data: np.ndarray | None) -> None:
    """Replace (or, with None, delete) one dataset of an .h5 file."""
    with h5py.File(path, "a") as file:
        del file[key]
        if data is not None:
            file.create_dataset(key, data=data)


def read(path: Path, key: str) -> np.ndarray:
    with h5py.File(path) as file:
        return file[key][()]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def with_nan(path: Path) -> None:
    kspace = read(path, "kspace")
    kspace[1, 3, 4] = np.nan
    rewrite(path, "kspace", kspace)


def zero_slices(path: Path) -> None:
    rewrite(path, "kspace", read(path, "kspace")[:0])
    rewrite(path, "reconstruction_esc", read(path, "reconstruction_esc")[:0])


def large_target(path: Path) -> None:
    rewrite(path, "reconstruction_esc", np.zeros((3, 80, 80), dtype=np.float32))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "not_hdf5": (lambda p: p.write_text("not HDF5"), "not a readable HDF5 file"),
    "truncated": (truncate, "not a readable HDF5 file, or truncated"),
    "no_kspace": (lambda p: rewrite(p, "kspace", None), "no 'kspace' dataset"),
    "no_target": (
        lambda p: rewrite(p, "reconstruction_esc", None),
        "no 'reconstruction_esc' target",
    ),
    "wrong_ndim": (
        lambda p: rewrite(p, "kspace", read(p, "kspace")[0]),
        "expected singlecoil (slices, H, W)",
    ),
    "real_kspace": (lambda p: rewrite(p, "kspace", read(p, "kspace").real), "kspace is real"),
    "nan_kspace": (with_nan, "slice 1 holds NaN or Inf"),
    "zero_slices": (zero_slices, "has no slices"),
    "target_larger": (large_target, "larger than the k-space image"),
}


@pytest.mark.parametrize("case", CASES)
def test_broken_file_is_named_in_one_line(tiny_root: Path, tmp_path: Path, case: str) -> None:
    folder = copy_split(tiny_root, tmp_path)
    path = first_file(folder)
    breakage, message = CASES[case]
    breakage(path)
    with pytest.raises(DataError, match=re.escape(message)) as error:
        SliceDataset(folder, "singlecoil")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_skip_bad_files_warns_each_and_keeps_the_rest(tiny_root: Path, tmp_path: Path) -> None:
    folder = copy_split(tiny_root, tmp_path)
    files = sorted(folder.glob("*.h5"))
    files[0].write_text("not HDF5")
    with_nan(files[1])
    with pytest.warns(UserWarning, match="skipping") as caught:
        dataset = SliceDataset(folder, "singlecoil", skip_bad_files=True)
    assert len([w for w in caught if "skipping" in str(w.message)]) == 2
    assert {path.name for path, _ in dataset.slices} == {files[2].name}


def test_test_file_mask_must_match_kspace_width(tiny_root: Path, tmp_path: Path) -> None:
    folder = copy_split(tiny_root, tmp_path, split="test")
    path = first_file(folder)
    rewrite(path, "mask", read(path, "mask")[:-1])
    with pytest.raises(DataError, match=r"mask has shape \(39,\), expected \(40,\)"):
        SliceDataset(folder, "singlecoil", require_target=False)


def test_challenge_mismatch_says_which_challenge(tiny_root: Path) -> None:
    with pytest.raises(DataError, match="set data.challenge=multicoil"):
        SliceDataset(split_folder(tiny_root, "multicoil", "train"), "singlecoil")
    with pytest.raises(DataError, match="set data.challenge=singlecoil"):
        SliceDataset(split_folder(tiny_root, "singlecoil", "train"), "multicoil")


@pytest.mark.parametrize("breakage", ["missing", "malformed"])
def test_bad_header_falls_back_to_array_shapes(
    tiny_root: Path, tmp_path: Path, breakage: str
) -> None:
    folder = copy_split(tiny_root, tmp_path)
    path = first_file(folder)
    rewrite(
        path, "ismrmrd_header", None if breakage == "missing" else np.bytes_(b"<ismrmrdHeader>")
    )
    with pytest.warns(UserWarning, match="using array shapes"):
        dataset = SliceDataset(folder, "singlecoil")
    attrs = dataset.metadata[path.name]
    assert attrs["padding_left"] == 0 and attrs["padding_right"] == 40
    assert tuple(attrs["recon_size"][:2]) == (32, 32)


@pytest.mark.parametrize(
    "override, message",
    [
        ("unknown_key=1", "Could not override 'unknown_key'"),
        ("optimizer=adamx", "Could not find 'optimizer/adamx'"),
    ],
)
def test_bad_override_is_one_line_before_hydra_runs(
    capsys: pytest.CaptureFixture, override: str, message: str
) -> None:
    with pytest.raises(SystemExit) as stop:
        check_overrides("train", [override])
    assert stop.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error:") and message in stderr
    assert stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=-1", "optimizer.lr: expected a positive number"),
        ("mask.accelerations=[0.5,8]", "mask.accelerations: expected values >= 1"),
        ("mask.center_fractions=[1.5,0.04]", "mask.center_fractions: expected values in (0, 1)"),
        ("model.chans=24 model.groups=16", "model.groups=16 does not divide"),
        (
            "model.chans=12 model.groups=16",
            "model.groups=16 does not divide a layer of 24 channels",
        ),
        ("model.chans=24", "model.groups=256 does not divide a layer of 384 channels"),
        ("model.chans=abc", "model.chans: expected an integer"),
        ("model.norm=weight", "model.norm: expected one of"),
        ("model=varnet model.start=tv", "model.start: expected one of ['zero_filled', 'sense']"),
        ("model=varnet model.sense_iterations=0", "model.sense_iterations: expected an integer"),
        ("model=varnet model.sens_maps=walsh", "model.sens_maps: expected one of"),
        ("model=varnet model.data_consistency=hard", "model.data_consistency: expected one of"),
        ("model=varnet model.dc_iterations=0", "model.dc_iterations: expected an integer >= 1"),
    ],
)
def test_bad_value_rejected_before_any_work(tmp_path: Path, override: str, message: str) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=re.escape(message)):
        train_in_process(run_dir, *override.split())
    assert not (run_dir / "checkpoints").exists()


def test_bad_value_is_one_line_from_the_command(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli("mri-recon-train", "optimizer.lr=-1", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2
    assert result.stderr == "error: optimizer.lr: expected a positive number, got -1\n"
    assert not (run_dir / "checkpoints").exists()
