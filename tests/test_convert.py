"""mri-recon-convert: ISMRMRD raw data -> fastMRI layout (round trip, averages, masks, refusals)."""

import re
import shutil
import subprocess
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from mri_recon.data.header import parse_header
from mri_recon.data.ismrmrd_convert import ConvertError, convert_file

from .conftest import TINY_TRAIN, run_cli, train_in_process

TOOL_FILES = (
    Path(__file__).parent / "data"
)  # made by ISMRMRD's ismrmrd_generate_cartesian_shepp_logan


def acquisition(lines: np.ndarray, slice_: int, step: int, flags: int = 0) -> ismrmrd.Acquisition:
    """One ISMRMRD readout line: ``lines`` (coils, samples)."""
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(lines, dtype=np.complex64))
    acq.idx.slice, acq.idx.kspace_encode_step_1 = slice_, step
    acq.center_sample = lines.shape[-1] // 2
    acq.flags = flags
    return acq


def demo_as_ismrmrd(
    source: Path, out: Path, xml: bytes | None = None, averages: int = 1, noise: bool = True
) -> Path:
    """Write a demo volume as ISMRMRD acquisitions, one per slice and measured column (a noise
    measurement first); with ``averages`` = 2 each line twice, as k + d and k - d."""
    with h5py.File(source) as file:
        kspace, header = file["kspace"][()], file["ismrmrd_header"][()]
        mask = file["mask"][()] if "mask" in file else None
    multicoil = kspace if kspace.ndim == 4 else kspace[:, None]
    info = parse_header(xml or header)
    columns = range(info.padding_left, info.padding_right)
    rng = np.random.default_rng(0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with ismrmrd.Dataset(out, "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(xml or header)
        if noise:
            flag = 1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)
            lines = rng.standard_normal(multicoil.shape[1:3]).astype(np.complex64)
            dataset.append_acquisition(acquisition(lines, 0, 0, flag))
        for slice_, column in ((s, c) for s in range(len(multicoil)) for c in columns):
            if mask is not None and not mask[column]:
                continue
            lines = multicoil[slice_, :, :, column]
            step = column - info.padding_left
            if averages == 1:
                dataset.append_acquisition(acquisition(lines, slice_, step))
                continue
            offset = (rng.standard_normal(lines.shape) * np.abs(lines).mean()).astype(np.complex64)
            for sign in (1, -1):
                acq = acquisition(lines + sign * offset, slice_, step)
                acq.idx.average = (1 - sign) // 2
                dataset.append_acquisition(acq)
    return out


def convert(path: Path, out: Path, **settings: str) -> list[Path]:
    options = {"repetitions": "combine", "partial_fourier": "error", **settings}
    return convert_file(path, out, "dataset", options["repetitions"], options["partial_fourier"])


@pytest.mark.parametrize("challenge", ["singlecoil", "multicoil"])
def test_demo_round_trip_gives_the_demo_file(
    tiny_root: Path, tmp_path: Path, challenge: str
) -> None:
    source = sorted((tiny_root / f"{challenge}_val").glob("*.h5"))[0]
    (converted,) = convert(demo_as_ismrmrd(source, tmp_path / source.name), tmp_path / "out")
    assert converted == tmp_path / "out" / source.name
    target_key = "reconstruction_esc" if challenge == "singlecoil" else "reconstruction_rss"
    with h5py.File(source) as demo, h5py.File(converted) as mine:
        assert np.array_equal(mine["kspace"][()], demo["kspace"][()])
        assert mine["kspace"].dtype == np.complex64
        assert np.array_equal(mine[target_key][()], demo[target_key][()])
        assert mine["ismrmrd_header"][()] == demo["ismrmrd_header"][()]
        for key in ("max", "norm"):
            assert mine.attrs[key] == pytest.approx(demo.attrs[key], rel=1e-6)
        assert "mask" not in mine


def test_averages_are_combined_and_noise_is_kept_out(tiny_root: Path, tmp_path: Path) -> None:
    source = sorted((tiny_root / "multicoil_val").glob("*.h5"))[0]
    raw = demo_as_ismrmrd(source, tmp_path / source.name, averages=2)
    (converted,) = convert(raw, tmp_path / "out")
    with h5py.File(source) as demo, h5py.File(converted) as mine:
        np.testing.assert_allclose(
            mine["kspace"][()], demo["kspace"][()], atol=1e-6 * np.abs(demo["kspace"][()]).max()
        )


def test_undersampled_scan_becomes_a_test_file_with_its_mask(
    tiny_root: Path, tmp_path: Path
) -> None:
    source = sorted((tiny_root / "multicoil_test").glob("*.h5"))[0]
    (converted,) = convert(demo_as_ismrmrd(source, tmp_path / source.name), tmp_path / "out")
    with h5py.File(source) as demo, h5py.File(converted) as mine:
        measured = slice(
            *(lambda i: (i.padding_left, i.padding_right))(parse_header(demo["ismrmrd_header"][()]))
        )
        # The demo's masks also pick zero-padding columns, which no scanner line fills.
        assert np.array_equal(mine["mask"][measured], demo["mask"][measured])
        assert np.array_equal(mine["kspace"][()], demo["kspace"][()])
        assert "reconstruction_rss" not in mine and "max" not in mine.attrs
        assert mine.attrs["num_low_frequency"] >= demo.attrs["num_low_frequency"]
        assert mine.attrs["acceleration"] >= 2


def test_converted_files_train_like_the_demo(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "converted"
    for split in ("train", "val"):
        for source in sorted((tiny_root / f"multicoil_{split}").glob("*.h5")):
            raw = demo_as_ismrmrd(
                source, tmp_path / "raw" / split / source.name, noise=split == "val"
            )
            convert(raw, root / f"multicoil_{split}")
    results = {}
    for name, data_root in (("demo", tiny_root), ("converted", root)):
        args = [f"data.root={data_root}", "data.challenge=multicoil", "trainer.max_epochs=1"]
        args += [f"data.cache_dir={tmp_path / name / 'cache'}", *TINY_TRAIN]
        results[name] = train_in_process(tmp_path / name, *args).metrics
    assert results["converted"] == results["demo"]


def test_files_of_ismrmrds_own_generator_convert(tmp_path: Path) -> None:
    (full,) = convert(TOOL_FILES / "shepp_logan_4coil.h5", tmp_path)
    with h5py.File(full) as file:  # 4 coils, 2x oversampled readout of a 32x32 matrix
        assert file["kspace"].shape == (1, 4, 64, 32)
        assert file["reconstruction_rss"].shape == (1, 32, 32)
        assert parse_header(file["ismrmrd_header"][()]).recon_size == (32, 32, 1)
    # Acceleration 2: two repetitions, each every other line (and 8 center lines).
    accelerated = TOOL_FILES / "shepp_logan_4coil_accel2.h5"
    (combined,) = convert(accelerated, tmp_path / "combined")
    assert "reconstruction_rss" in h5py.File(combined)
    repetitions = convert(accelerated, tmp_path / "separate", repetitions="separate")
    assert [p.name for p in repetitions] == [f"shepp_logan_4coil_accel2_rep{r}.h5" for r in (0, 1)]
    masks = []
    for path in repetitions:
        with h5py.File(path) as file:
            assert file.attrs["acceleration"] == 2 and file.attrs["num_low_frequency"] >= 8
            masks.append(file["mask"][()])
    assert masks[0].sum() < 32 and (masks[0] | masks[1]).all()


@pytest.mark.skipif(
    shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
    reason="ISMRMRD's tools are not installed (Debian: apt-get install ismrmrd-tools)",
)
def test_files_generated_now_by_ismrmrds_tools_convert(tmp_path: Path) -> None:
    for extra in ([], ["-r", "2"], ["-a", "2", "-w", "8"]):
        raw = tmp_path / f"sl{len(extra)}.h5"
        command = [
            "ismrmrd_generate_cartesian_shepp_logan",
            "-m",
            "32",
            "-c",
            "2",
            "-C",
            "-o",
            str(raw),
        ]
        subprocess.run(command + extra, check=True, capture_output=True)
        (converted,) = convert(raw, tmp_path / "out")
        assert h5py.File(converted)["kspace"].shape == (1, 2, 64, 32)


def edited_header(source: Path, *edits: tuple[str, str]) -> bytes:
    """The source's header with each (pattern, replacement) applied once."""
    xml = h5py.File(source)["ismrmrd_header"][()].decode()
    for pattern, replacement in edits:
        edited = re.sub(pattern, replacement, xml, count=1, flags=re.DOTALL)
        assert edited != xml
        xml = edited
    return xml.encode()


# 28 of the 40 columns, 20 of them below the k-space center: partial Fourier.
PARTIAL_FOURIER = (
    (r"<maximum>\d+</maximum>", "<maximum>27</maximum>"),
    (r"<center>\d+</center>", "<center>20</center>"),
)


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            [("<trajectory>cartesian", "<trajectory>radial")],
            "radial trajectory, expected cartesian",
        ),
        ([(r"(<encodedSpace>\s*<matrixSize>.*?)<z>1</z>", r"\1<z>8</z>")], "3-D encoding"),
        (PARTIAL_FOURIER, "partial Fourier"),
        ([(r"(<reconSpace>\s*<matrixSize>)<x>\d+", r"\1<x>0")], "reconSpace matrix 0x"),
        ([(r"(<reconSpace>\s*<matrixSize><x>\d+</x>)<y>\d+", r"\1<y>999")], "x999, expected"),
        ([("<minimum>0</minimum>", "<minimum>1</minimum>")], "outside the encoding limits 1..35"),
    ],
)
def test_what_cannot_be_placed_is_one_line_and_no_file(
    tiny_root: Path, tmp_path: Path, edits: list, message: str
) -> None:
    source = sorted((tiny_root / "multicoil_val").glob("*.h5"))[0]
    raw = demo_as_ismrmrd(source, tmp_path / "raw.h5")
    with h5py.File(raw, "a") as file:  # the lines stay where the demo's header put them
        file["dataset/xml"][0] = edited_header(source, *edits)
    with pytest.raises(ConvertError, match=message) as error:
        convert(raw, tmp_path / "out")
    assert str(raw) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_partial_fourier_is_zero_filled_on_request(tiny_root: Path, tmp_path: Path) -> None:
    source = sorted((tiny_root / "multicoil_val").glob("*.h5"))[0]
    xml = edited_header(source, *PARTIAL_FOURIER)
    raw = demo_as_ismrmrd(source, tmp_path / "raw.h5", xml=xml)
    (converted,) = convert(raw, tmp_path / "out", partial_fourier="zero_fill")
    with h5py.File(converted) as file:
        info = parse_header(file["ismrmrd_header"][()])
        kspace = file["kspace"][()]
        assert "reconstruction_rss" in file  # every line inside the limits was measured
    assert np.abs(kspace[..., info.padding_right :]).max() == 0


def test_command_converts_a_folder_and_names_each_file_it_cannot(
    tiny_root: Path, tmp_path: Path
) -> None:
    source = sorted((tiny_root / "multicoil_val").glob("*.h5"))[0]
    folder = tmp_path / "raw"
    demo_as_ismrmrd(source, folder / "good.h5")
    shutil.copy(source, folder / "fastmri.h5")  # not ISMRMRD: one line, the other still converts
    result = run_cli(
        "mri-recon-convert",
        f"input={folder}",
        f"out={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "fastmri.h5: no ISMRMRD header" in lines[0]
    assert "already in the fastMRI layout" in lines[0] and "1 of 2 files" in lines[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.h5"]
