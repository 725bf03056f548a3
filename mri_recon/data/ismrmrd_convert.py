"""Scanner raw data (ISMRMRD) -> the fastMRI layout the rest of the pipeline reads.

An ISMRMRD dataset is an XML header and a list of acquisitions, each one readout line of every
coil with counters saying where it belongs (phase-encode line, slice, average, repetition, ...).
For a Cartesian 2-D multi-slice scan each line goes to

    kspace[slice, coil, :, line + padding_left]       (slices, coils, H, W), complex64

with H the encoded (oversampled) readout, kept as fastMRI keeps it, and padding_left from the
header's encoding limits exactly as fastMRI reads it back (``data.header.parse_header``). Lines
measured more than once (averages, and repetitions unless kept apart) are averaged. Fully sampled
scans get the release's target (``reconstruction_rss``, and ``reconstruction_esc`` for one coil)
and ``max``/``norm``; undersampled ones become test-style files with their ``mask``. What cannot
be placed raises a ConvertError naming the file, before anything is written.
"""

import hashlib
import xml.etree.ElementTree as etree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np

from mri_recon.data.dataset import write_layout_file
from mri_recon.data.header import ISMRMRD_NAMESPACE
from mri_recon.data.target import target_image
from mri_recon.errors import UserError

# Acquisitions that are not image k-space: kept out by their flags (noise measurements first).
SKIPPED_FLAGS = {
    ismrmrd.ACQ_IS_NOISE_MEASUREMENT: "noise",
    ismrmrd.ACQ_IS_NAVIGATION_DATA: "navigator",
    ismrmrd.ACQ_IS_PHASECORR_DATA: "phase correction",
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA: "feedback",
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA: "dummy scan",
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA: "feedback",
    ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA: "surface coil correction",
    ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE: "phase stabilization",
    ismrmrd.ACQ_IS_PHASE_STABILIZATION: "phase stabilization",
}
# Counters this converter has no axis for: a scan that uses them is refused, not flattened.
UNPLACED_COUNTERS = ("kspace_encode_step_2", "contrast", "phase", "set")
NAMESPACE = {"ns": ISMRMRD_NAMESPACE}
# Sampled half-widths around the k-space center whose ratio is below this are partial Fourier.
PARTIAL_FOURIER_RATIO = 0.9


class ConvertError(UserError):
    """An ISMRMRD file this converter cannot place into the fastMRI layout."""


@dataclass(frozen=True)
class Geometry:
    """Where acquisitions go: the (H, W) k-space matrix, the target size, the first measured
    column, the measured lines' counter range and the header's acceleration (1 if none)."""

    matrix: tuple[int, int]
    recon: tuple[int, int]
    padding_left: int
    lines: tuple[int, int]
    acceleration: int


def find(root: etree.Element, path: str) -> str | None:
    """The text of the header element at ``path`` ("a/b/c", ISMRMRD namespace), or None."""
    element = root.find("/".join(f"ns:{part}" for part in path.split("/")), NAMESPACE)
    return element.text.strip() if element is not None and element.text else None


def number(root: etree.Element, path: str, default: int) -> int:
    """An integer header element, or ``default`` if the header has none."""
    text = find(root, path)
    return int(float(text)) if text is not None else default


def read_geometry(root: etree.Element, path: Path, partial_fourier: str) -> Geometry:
    """The k-space geometry of the first encoding; ConvertError for what cannot be placed."""
    trajectory = find(root, "encoding/trajectory") or "cartesian"
    if trajectory != "cartesian":
        raise ConvertError(f"{path}: {trajectory} trajectory, expected cartesian")
    encoded = [number(root, f"encoding/encodedSpace/matrixSize/{a}", 0) for a in "xyz"]
    recon = [number(root, f"encoding/reconSpace/matrixSize/{a}", 0) for a in "xy"]
    if encoded[2] > 1 or number(root, "encoding/encodingLimits/kspace_encoding_step_2/maximum", 0):
        raise ConvertError(f"{path}: 3-D encoding (encoded z = {encoded[2]}), expected 2-D slices")
    if not all(1 <= size <= limit for size, limit in zip(recon, encoded, strict=False)):
        raise ConvertError(
            f"{path}: reconSpace matrix {recon[0]}x{recon[1]}, expected one from 1x1 to the "
            f"encoded {encoded[0]}x{encoded[1]} (the target is cropped from the encoded image)"
        )
    limits = "encoding/encodingLimits/kspace_encoding_step_1/"
    first = number(root, limits + "minimum", 0)
    last = number(root, limits + "maximum", encoded[1] - 1)
    center = number(root, limits + "center", encoded[1] // 2)
    below, above = center - first, last + 1 - center
    if (
        min(below, above) < PARTIAL_FOURIER_RATIO * max(below, above)
        and partial_fourier != "zero_fill"
    ):
        raise ConvertError(
            f"{path}: partial Fourier ({below} lines below the k-space center, {above} from it "
            "up); set partial_fourier=zero_fill to keep the missing lines as zeros"
        )
    factor = "encoding/parallelImaging/accelerationFactor/kspace_encoding_step_1"
    return Geometry(
        matrix=(encoded[0], encoded[1]),
        recon=(recon[0], recon[1]),
        padding_left=encoded[1] // 2 - center,
        lines=(first, last),
        acceleration=number(root, factor, 1),
    )


def is_flagged(flags: np.ndarray, flag: int) -> np.ndarray:
    """Which of the acquisitions' ``flags`` (uint64 bit fields) have ISMRMRD flag ``flag``."""
    return (flags & np.uint64(1 << (flag - 1))) != 0


def read_acquisitions(file: h5py.File, group: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The image acquisitions' headers (a structured array) and data (an object array of
    interleaved float32 samples); noise, navigator and other non-image lines left out."""
    if f"{group}/data" not in file:
        raise ConvertError(f"{path}: no acquisitions ({group}/data), expected ISMRMRD raw data")
    data = file[f"{group}/data"]
    heads = data.fields("head")[:]
    keep = np.ones(len(heads), dtype=bool)
    for flag in SKIPPED_FLAGS:
        keep &= ~is_flagged(heads["flags"], flag)
    if not keep.any():
        raise ConvertError(f"{path}: only noise or other non-image acquisitions, no k-space lines")
    return heads[keep], data.fields("data")[:][keep]


def check_counters(heads: np.ndarray, geometry: Geometry, path: Path) -> None:
    """ConvertError unless every line has a place: counters inside the encoding limits, one
    encoding space, one coil count, one readout length."""
    idx = heads["idx"]
    for counter in UNPLACED_COUNTERS:
        if idx[counter].any():
            raise ConvertError(
                f"{path}: counter {counter} goes up to {idx[counter].max()}, which this "
                "converter has no axis for (expected 2-D single-contrast scans)"
            )
    lines = idx["kspace_encode_step_1"]
    first, last = geometry.lines
    if lines.min() < first or lines.max() > last:
        bad = lines[(lines < first) | (lines > last)][0]
        raise ConvertError(
            f"{path}: phase-encode counter {bad} outside the encoding limits {first}..{last}"
        )
    columns = (geometry.padding_left + first, geometry.padding_left + last)
    if columns[0] < 0 or columns[1] >= geometry.matrix[1]:
        raise ConvertError(
            f"{path}: the encoding limits put lines in columns {columns[0]}..{columns[1]} of "
            f"an encoded matrix of {geometry.matrix[1]}"
        )
    if heads["encoding_space_ref"].any():
        raise ConvertError(f"{path}: acquisitions of a second encoding space, expected one")
    for field in ("active_channels", "number_of_samples", "discard_pre", "discard_post"):
        if len(np.unique(heads[field])) > 1:
            raise ConvertError(f"{path}: {field} varies between acquisitions, expected one value")


def readout_offset(heads: np.ndarray, geometry: Geometry, path: Path, partial_fourier: str) -> int:
    """Where a line's kept samples start in the H readout points (0 unless asymmetric echo)."""
    head = heads[0]
    kept = int(head["number_of_samples"]) - int(head["discard_pre"]) - int(head["discard_post"])
    height = geometry.matrix[0]
    if kept == height:
        return 0
    center = int(head["center_sample"]) - int(head["discard_pre"])
    offset = height // 2 - center
    fits = kept < height and 0 <= offset and offset + kept <= height and center > 0
    if not fits or partial_fourier != "zero_fill":
        raise ConvertError(
            f"{path}: readouts of {kept} samples (center {center}) for an encoded matrix of "
            f"{height}; "
            + ("set partial_fourier=zero_fill to zero-fill them" if fits else "cannot place them")
        )
    return offset


def assemble(
    heads: np.ndarray, data: np.ndarray, geometry: Geometry, offset: int, separate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Average every line into place.

    Returns kspace (volumes, slices, coils, H, W) complex64 and counts (volumes, slices, W), the
    measurements averaged per line: one volume, or one per repetition if ``separate``.
    """
    idx = heads["idx"]
    volumes = int(idx["repetition"].max()) + 1 if separate else 1
    slices, coils = int(idx["slice"].max()) + 1, int(heads["active_channels"][0])
    (height, width), pre = geometry.matrix, int(heads["discard_pre"][0])
    kept = int(heads["number_of_samples"][0]) - pre - int(heads["discard_post"][0])
    kspace = np.zeros((volumes, slices, coils, height, width), dtype=np.complex128)
    counts = np.zeros((volumes, slices, width), dtype=np.int64)
    for i in range(len(heads)):
        volume = int(idx["repetition"][i]) if separate else 0
        slice_, column = int(idx["slice"][i]), int(idx["kspace_encode_step_1"][i])
        column += geometry.padding_left
        samples = data[i].view(np.complex64).reshape(coils, -1)[:, pre : pre + kept]
        kspace[volume, slice_, :, offset : offset + kept, column] += samples
        counts[volume, slice_, column] += 1
    kspace /= np.maximum(counts, 1)[:, :, None, None, :]
    return kspace.astype(np.complex64), counts


def volume_file(
    kspace: np.ndarray, counts: np.ndarray, geometry: Geometry
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One volume's datasets and attrs: targets if fully sampled, else a test-style ``mask``.

    kspace: (slices, coils, H, W); counts: (slices, W). One coil is stored single-coil
    (slices, H, W), with ``reconstruction_esc`` beside ``reconstruction_rss``.
    """
    if kspace.shape[1] == 1:
        kspace = kspace[:, 0]
    first = geometry.padding_left + geometry.lines[0]
    last = geometry.padding_left + geometry.lines[1]
    sampled = (counts > 0).any(axis=0)
    if (counts[:, first : last + 1] > 0).all():
        target = target_image(kspace, geometry.recon)
        arrays = {"kspace": kspace, "reconstruction_rss": target}
        if kspace.ndim == 3:
            arrays["reconstruction_esc"] = target
        return arrays, {"max": float(target.max()), "norm": float(np.linalg.norm(target))}
    measured = int(sampled[first : last + 1].sum())
    acceleration = geometry.acceleration
    if acceleration <= 1:
        acceleration = round((last + 1 - first) / measured)
    center = kspace.shape[-1] // 2
    left, right = center, center
    while left > 0 and sampled[left - 1]:
        left -= 1
    while right < len(sampled) and sampled[right]:
        right += 1
    attrs = {"acceleration": int(acceleration), "num_low_frequency": int(right - left)}
    return {"kspace": kspace, "mask": sampled}, attrs


def header_attrs(root: etree.Element, path: Path) -> dict[str, str]:
    """``acquisition`` (the protocol name) and ``patient_id`` (the header's, else one made
    from the file name) as the release's attrs."""
    patient = find(root, "subjectInformation/patientID")
    return {
        "acquisition": find(root, "measurementInformation/protocolName") or "unknown",
        "patient_id": patient or hashlib.sha256(path.name.encode()).hexdigest()[:16],
    }


def read_header(file: h5py.File, group: str, path: Path) -> tuple[bytes, etree.Element]:
    """The dataset's XML header, as stored and parsed (leniently: fields this converter does
    not use may be missing)."""
    if f"{group}/xml" not in file:
        hint = "; it is already in the fastMRI layout" if "kspace" in file else ""
        raise ConvertError(f"{path}: no ISMRMRD header ({group}/xml){hint}")
    xml = file[f"{group}/xml"][0]
    xml = xml if isinstance(xml, bytes) else str(xml).encode()
    try:
        root = etree.fromstring(xml)
    except etree.ParseError as error:
        raise ConvertError(f"{path}: malformed ISMRMRD header ({error})") from error
    if root.find("ns:encoding", NAMESPACE) is None:
        raise ConvertError(f"{path}: the ISMRMRD header has no <encoding>")
    return xml, root


def convert_file(
    path: Path, out: Path, group: str, repetitions: str, partial_fourier: str
) -> list[Path]:
    """Convert one ISMRMRD file; return the files written (``<out>/<stem>.h5``, or
    ``<stem>_rep<N>.h5`` per repetition with ``repetitions=separate``)."""
    try:
        with h5py.File(path, "r") as file:
            xml, root = read_header(file, group, path)
            geometry = read_geometry(root, path, partial_fourier)
            heads, data = read_acquisitions(file, group, path)
    except OSError as error:
        raise ConvertError(f"{path}: not a readable HDF5 file ({error})") from error
    check_counters(heads, geometry, path)
    offset = readout_offset(heads, geometry, path, partial_fourier)
    separate = repetitions == "separate"
    kspace, counts = assemble(heads, data, geometry, offset, separate)
    volumes = [volume_file(k, c, geometry) for k, c in zip(kspace, counts, strict=True)]
    written = []
    for number, (arrays, attrs) in enumerate(volumes):
        name = f"{path.stem}_rep{number}.h5" if separate else f"{path.stem}.h5"
        write_layout_file(out / name, arrays, xml, {**header_attrs(root, path), **attrs})
        written.append(out / name)
    return written


def input_files(source: str | Path) -> list[Path]:
    """The ISMRMRD files to convert: ``source`` itself, or the .h5 files in that folder."""
    source = Path(source).expanduser()
    if source.is_dir():
        files = sorted(source.glob("*.h5"))
        if not files:
            raise UserError(f"input: {source} holds no .h5 files (expected ISMRMRD datasets)")
        return files
    if not source.is_file():
        raise UserError(f"input: {source} does not exist (expected an ISMRMRD .h5 file or folder)")
    return [source]
