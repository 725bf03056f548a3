"""The ISMRMRD XML header of a fastMRI file: matrix sizes and phase-encode padding.

fastMRI files store k-space of shape (..., H, W): H is the (2x oversampled) readout, W the phase
encode. The header's ``encodedSpace`` gives (H, W), ``reconSpace`` the target size, and
``encodingLimits/kspace_encoding_step_1`` the acquired phase-encode lines: columns outside
``[padding_left, padding_right)`` were never measured and hold zeros.
"""

import xml.etree.ElementTree as etree
from dataclasses import dataclass

from fastmri.data.mri_data import et_query

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"


@dataclass(frozen=True)
class HeaderInfo:
    """Geometry read from the header (or derived from array shapes when it is missing)."""

    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int


def parse_header(xml: bytes | str) -> HeaderInfo:
    """Read matrix sizes and padding exactly as fastmri's SliceDataset does.

    Raises ValueError (with the missing element named) when the XML lacks a field.
    """
    root = etree.fromstring(xml)

    def query(path: list[str]) -> int:
        try:
            return int(et_query(root, path, ISMRMRD_NAMESPACE))
        except RuntimeError as error:
            raise ValueError(f"header has no element {'/'.join(path)}") from error

    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    encoding_size = (query(enc + ["x"]), query(enc + ["y"]), query(enc + ["z"]))
    recon_size = (query(rec + ["x"]), query(rec + ["y"]), query(rec + ["z"]))
    center = query(lims + ["center"])
    maximum = query(lims + ["maximum"]) + 1
    padding_left = encoding_size[1] // 2 - center
    return HeaderInfo(encoding_size, recon_size, padding_left, padding_left + maximum)


def header_from_shapes(kspace_hw: tuple[int, int], target_hw: tuple[int, int]) -> HeaderInfo:
    """Geometry for a file without a usable header: no padding, recon size = target size."""
    height, width = kspace_hw
    return HeaderInfo((height, width, 1), (target_hw[0], target_hw[1], 1), 0, width)


def build_header(
    encoding_size: tuple[int, int],
    recon_size: tuple[int, int],
    acquired_columns: int,
    field_of_view_mm: tuple[float, float],
    num_coils: int,
) -> bytes:
    """Write a minimal ISMRMRD header in the layout of the fastMRI release.

    ``acquired_columns`` central phase-encode lines were measured; the rest of the
    ``encoding_size[1]`` columns are zero padding, split so the k-space center stays at column
    ``W // 2``.
    """
    center = acquired_columns // 2
    fov_x, fov_y = field_of_view_mm
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}">
  <acquisitionSystemInformation>
    <systemVendor>mri-recon demo</systemVendor>
    <receiverChannels>{num_coils}</receiverChannels>
  </acquisitionSystemInformation>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{encoding_size[0]}</x><y>{encoding_size[1]}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{2 * fov_x:.1f}</x><y>{fov_y:.1f}</y><z>3.0</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{recon_size[0]}</x><y>{recon_size[1]}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fov_x:.1f}</x><y>{fov_x:.1f}</y><z>3.0</z></fieldOfView_mm>
    </reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1>
        <minimum>0</minimum><maximum>{acquired_columns - 1}</maximum><center>{center}</center>
      </kspace_encoding_step_1>
    </encodingLimits>
    <trajectory>cartesian</trajectory>
  </encoding>
</ismrmrdHeader>
""".encode()
