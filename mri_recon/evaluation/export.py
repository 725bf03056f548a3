"""Reconstructions out to viewers: a NIfTI file and a DICOM series per volume.

Geometry comes from the source file's ISMRMRD header: in-plane voxel size = reconSpace field of
view / reconSpace matrix (rows along the readout x, columns along the phase encode y), slice
thickness = reconSpace field of view z, and slices taken as contiguous (fastMRI files do not
record a slice gap or patient position). Files without a usable header get 1 mm voxels.

Orientation, the same in both formats: voxel (row i, column j, slice k) of a (slices, H, W)
volume lies at RAS+ millimetres (i * row_mm, j * column_mm, k * slice_mm), i.e. rows run to the
patient's left, columns to anterior, slices to superior. This is a stated convention, not the
scanner's patient orientation, which fastMRI files do not hold; viewers show the two formats
identically and measure distances correctly.
"""

import gzip
import xml.etree.ElementTree as etree
from pathlib import Path
from typing import NamedTuple

import h5py
import nibabel
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mri_recon.data.header import ISMRMRD_NAMESPACE
from mri_recon.errors import UserError
from mri_recon.files import atomic_path

FORMATS = ("nifti", "dicom")
NAMESPACE = {"ns": ISMRMRD_NAMESPACE}
# DICOM direction cosines (LPS) of the RAS+ convention above: along a row (columns increase)
# is RAS +y = LPS -y; down a column (rows increase) is RAS +x = LPS -x.
IMAGE_ORIENTATION = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]
TYPE_2_EMPTY = (
    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber", "ScanOptions", "EchoTime", "EchoTrainLength",
)  # fmt: skip


def check_export(formats: list[str]) -> None:
    """Raise UserError unless every entry of ``export`` is a format this module writes."""
    for name in formats:
        if name not in FORMATS:
            raise UserError(f"export: expected entries from {list(FORMATS)}, got {name!r}")


class VoxelSize(NamedTuple):
    """Millimetres between rows (readout), columns (phase encode) and slices."""

    row_mm: float
    column_mm: float
    slice_mm: float


def voxel_size(xml: bytes | None) -> VoxelSize:
    """The reconstructed voxel size of a fastMRI file's ISMRMRD header (1 mm if unknown)."""
    try:
        root = etree.fromstring(xml)
        space = "ns:encoding/ns:reconSpace"
        fov = [float(root.find(f"{space}/ns:fieldOfView_mm/ns:{a}", NAMESPACE).text) for a in "xyz"]
        matrix = [int(root.find(f"{space}/ns:matrixSize/ns:{a}", NAMESPACE).text) for a in "xy"]
        return VoxelSize(fov[0] / matrix[0], fov[1] / matrix[1], fov[2])
    except (TypeError, AttributeError, ValueError, ZeroDivisionError, etree.ParseError):
        return VoxelSize(1.0, 1.0, 1.0)


def nifti_affine(size: VoxelSize) -> np.ndarray:
    """The (4, 4) voxel (row, column, slice) -> RAS+ mm matrix of the module's convention."""
    return np.diag([size.row_mm, size.column_mm, size.slice_mm, 1.0])


def write_nifti(path: Path, volume: np.ndarray, size: VoxelSize, description: str) -> None:
    """volume: (slices, H, W) float32 -> NIfTI-1 of shape (H, W, slices), written atomically."""
    image = nibabel.Nifti1Image(np.ascontiguousarray(volume.transpose(1, 2, 0)), nifti_affine(size))
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description[:79].encode()
    image.set_qform(nifti_affine(size), code=1)
    image.set_sform(nifti_affine(size), code=1)
    with atomic_path(path) as temporary:
        temporary.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6))


class Series(NamedTuple):
    """What names one DICOM series: its description, the study it belongs to (one per source
    volume, shared by every method and acceleration), its number and the patient."""

    description: str
    study_uid: str
    number: int
    patient_id: str


def dicom_slice(
    pixels: np.ndarray, index: int, size: VoxelSize, series: Series, uids: tuple[str, str]
) -> pydicom.Dataset:
    """One MR Image Storage instance: slice ``index`` as uint16 ``pixels`` (H, W)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uids[0], str(index)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageType = "MR", ["DERIVED", "SECONDARY"]
    ds.Manufacturer, ds.PatientName, ds.PatientID = "mri-recon", "anonymous", series.patient_id
    for keyword in TYPE_2_EMPTY:  # required attributes of the MR Image IOD that we cannot know
        setattr(ds, keyword, "")
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "2D"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series.study_uid, *uids
    ds.SeriesDescription, ds.SeriesNumber = series.description, series.number
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = IMAGE_ORIENTATION
    ds.ImagePositionPatient = [0.0, 0.0, index * size.slice_mm]
    ds.SliceLocation = index * size.slice_mm
    ds.PixelSpacing = [size.row_mm, size.column_mm]
    ds.SliceThickness = ds.SpacingBetweenSlices = size.slice_mm
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def write_dicom_series(folder: Path, volume: np.ndarray, size: VoxelSize, series: Series) -> None:
    """volume: (slices, H, W) -> ``folder/slice_NNN.dcm``, one instance per slice.

    Pixels are uint16 with RescaleSlope/Intercept giving back the volume's values (to 1/65535
    of its range), and a window over its 0.5-99.5 percentiles.
    """
    low, high = min(float(volume.min()), 0.0), float(volume.max())
    slope = (high - low) / 65535 or 1.0
    pixels = np.round((volume - low) / slope).astype(np.uint16)
    window = np.percentile(volume, [0.5, 99.5])
    uids = (
        generate_uid(entropy_srcs=[series.study_uid, series.description]),
        generate_uid(entropy_srcs=[series.study_uid, "frame of reference"]),
    )
    for index, slice_pixels in enumerate(pixels):
        ds = dicom_slice(slice_pixels, index, size, series, uids)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, low, "US"
        ds.WindowCenter, ds.WindowWidth = float(window.mean()), float(max(np.ptp(window), slope))
        with atomic_path(folder / f"slice_{index:03d}.dcm") as temporary:
            ds.save_as(temporary, enforce_file_format=True)


def export_volumes(
    export_dir: Path,
    acceleration: int,
    formats: list[str],
    source: Path,
    patient_id: str,
    volumes: dict[str, np.ndarray],
) -> None:
    """Every method's (slices, H, W) volume of one ``source`` file at one acceleration, as
    ``<export_dir>/<acceleration>/<method>/<stem>.nii.gz`` and ``.../<stem>_dicom/``.

    The DICOM series of one source volume (every method and acceleration) share a study and
    frame of reference, so a viewer shows them side by side, linked; each method at each
    acceleration is a series named after them, numbered ``100 * acceleration + method``.
    """
    folder = export_dir / str(acceleration)
    with h5py.File(source, "r") as file:
        xml = file["ismrmrd_header"][()] if "ismrmrd_header" in file else None
    size = voxel_size(xml)
    study_uid = generate_uid(entropy_srcs=[str(export_dir.resolve()), source.name])
    for number, (method, volume) in enumerate(volumes.items(), start=100 * acceleration + 1):
        description = f"{method} {acceleration}x {source.stem}"
        if "nifti" in formats:
            write_nifti(folder / method / f"{source.stem}.nii.gz", volume, size, description)
        if "dicom" in formats:
            series = Series(description, study_uid, number, patient_id)
            write_dicom_series(folder / method / f"{source.stem}_dicom", volume, size, series)
