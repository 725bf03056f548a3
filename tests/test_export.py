"""mri-recon-eval export=[nifti,dicom]: one NIfTI and one DICOM series per reconstructed volume,
read back by nibabel, pydicom and (where installed) dcm2niix as one volume with the header's
geometry."""

import shutil
import subprocess
from pathlib import Path

import h5py
import nibabel
import numpy as np
import pydicom
import pytest

from mri_recon.errors import UserError
from mri_recon.evaluation.run import evaluate

from .conftest import compose_config

# The tiny demo's header: a 240 mm field of view over 32x32 pixels, 3 mm slices.
VOXEL_MM = (240.0 / 32, 240.0 / 32, 3.0)
METHODS = ("zero_filled", "unet")


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("export")
    overrides = [
        f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}",
        f"method=[{','.join(METHODS)}]",
        "export=[nifti,dicom]",
        "save_reconstructions=true",
    ]
    evaluate(compose_config("eval", overrides), run_dir)
    return run_dir


def read_series(folder: Path) -> list[pydicom.Dataset]:
    return sorted(
        (pydicom.dcmread(path) for path in folder.glob("*.dcm")), key=lambda ds: ds.InstanceNumber
    )


def reconstruction(run_dir: Path, method: str, acceleration: str, name: str) -> np.ndarray:
    with h5py.File(run_dir / "reconstructions" / method / acceleration / name) as file:
        return file["reconstruction"][()]


def test_nifti_holds_each_volume_with_the_header_geometry(exported: Path) -> None:
    files = sorted((exported / "export").rglob("*.nii.gz"))
    assert len(files) == 2 * len(METHODS) * 2  # accelerations x methods x val volumes
    for path in files:
        image = nibabel.load(path)
        acceleration, method = path.parent.parent.name, path.parent.name
        volume = reconstruction(exported, method, acceleration, path.name.replace(".nii.gz", ".h5"))
        assert image.shape == (32, 32, 3)
        assert image.header.get_zooms() == pytest.approx(VOXEL_MM)
        assert np.array_equal(image.get_fdata(dtype=np.float32), volume.transpose(1, 2, 0))
        assert int(image.header["qform_code"]) == 1 and method in str(image.header["descrip"])


def test_dicom_series_are_one_volume_each_with_geometry_and_values(exported: Path) -> None:
    studies: dict[str, set[str]] = {}
    series_uids = set()
    for folder in sorted((exported / "export").rglob("*_dicom")):
        acceleration, method = folder.parent.parent.name, folder.parent.name
        name = folder.name.removesuffix("_dicom")
        volume = reconstruction(exported, method, acceleration, f"{name}.h5")
        series = read_series(folder)
        assert len(series) == 3 and len({ds.SOPInstanceUID for ds in series}) == 3
        assert len({ds.SeriesInstanceUID for ds in series}) == 1
        first = series[0]
        assert first.SOPClassUID == pydicom.uid.MRImageStorage and first.Modality == "MR"
        assert f"{method} {acceleration}x" in first.SeriesDescription
        assert [float(v) for v in first.PixelSpacing] == pytest.approx(VOXEL_MM[:2])
        assert float(first.SliceThickness) == pytest.approx(VOXEL_MM[2])
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in series])
        normal = np.cross(*np.array(first.ImageOrientationPatient, dtype=float).reshape(2, 3))
        assert np.diff(positions @ normal) == pytest.approx([-VOXEL_MM[2]] * 2)
        values = np.stack([ds.pixel_array * ds.RescaleSlope + ds.RescaleIntercept for ds in series])
        assert np.abs(values - volume).max() <= first.RescaleSlope
        assert float(first.WindowWidth) > 0
        studies.setdefault(name, set()).add(first.StudyInstanceUID)
        series_uids.add(first.SeriesInstanceUID)
    assert all(len(uids) == 1 for uids in studies.values())  # every method: one study per volume
    assert len(series_uids) == 2 * len(METHODS) * 2


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed (Debian)")
def test_dcm2niix_reads_the_series_as_the_same_volume_in_space(
    exported: Path, tmp_path: Path
) -> None:
    folder = sorted((exported / "export").rglob("*_dicom"))[0]
    subprocess.run(
        ["dcm2niix", "-z", "y", "-o", str(tmp_path), "-f", "converted", str(folder)],
        check=True,
        capture_output=True,
    )
    theirs = nibabel.load(tmp_path / "converted.nii.gz")
    ours = nibabel.load(folder.parent / folder.name.replace("_dicom", ".nii.gz"))
    assert sorted(theirs.shape) == sorted(ours.shape)
    # Every voxel of ours, mapped through both affines, holds the same value in theirs.
    voxels = np.argwhere(np.ones(ours.shape))
    homogeneous = np.c_[voxels, np.ones(len(voxels))]
    mapped = homogeneous @ (np.linalg.inv(theirs.affine) @ ours.affine).T
    index = np.round(mapped[:, :3]).astype(int)
    assert np.abs(mapped[:, :3] - index).max() < 1e-3
    ours_values = ours.get_fdata()[tuple(voxels.T)]
    theirs_values = theirs.get_fdata()[tuple(index.T)]
    assert np.abs(ours_values - theirs_values).max() <= ours_values.max() / 65535 * 2


def test_test_split_exports_too_and_bad_format_is_one_line(tiny_root: Path, tmp_path: Path) -> None:
    data = [
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "method=[zero_filled]",
    ]
    evaluate(compose_config("eval", [*data, "split=test", "export=[nifti]"]), tmp_path)
    assert len(list((tmp_path / "export").rglob("*.nii.gz"))) == 2
    with pytest.raises(UserError, match="export: expected entries from \\['nifti', 'dicom'\\]"):
        evaluate(compose_config("eval", [*data, "export=[png]"]), tmp_path)
