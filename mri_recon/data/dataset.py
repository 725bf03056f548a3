"""fastMRI-layout slice dataset: one item = one slice of one .h5 file.

Like ``fastmri.data.SliceDataset`` (it accepts fastmri's transforms unchanged) but:
- every file is checked when the dataset is indexed, so a broken file stops the run with one line
  naming it instead of failing halfway through an epoch;
- the metadata cache is keyed by each file's size and modification time, so it is rebuilt for
  files that change (fastmri's is never invalidated);
- ``sample_rate``/``volume_sample_rate`` subsets are seeded, so they are the same in every run;
- each DataLoader worker opens a file once and then reads one slice at a time.
"""

import hashlib
import json
import logging
import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from mri_recon.data.header import header_from_shapes, parse_header
from mri_recon.errors import DataError
from mri_recon.files import atomic_path

log = logging.getLogger(__name__)

TARGET_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}
KSPACE_NDIM = {"singlecoil": 3, "multicoil": 4}
# Part of every cache entry's stamp: bump it when read_metadata records something new.
METADATA_VERSION = 2
ATTR_KEYS = ("max", "norm", "acquisition", "patient_id", "acceleration", "num_low_frequency")


def write_layout_file(
    path: Path, arrays: dict[str, np.ndarray], header: bytes, attrs: dict
) -> None:
    """Write one fastMRI-layout file atomically (temporary name, then rename).

    arrays: ``kspace`` and, as the file has them, the target (``reconstruction_esc``/``_rss``)
    and the test ``mask``, in that order; ``header``: the ISMRMRD XML; ``attrs``: ``max``,
    ``norm``, ``acquisition``, ``patient_id``, and for test files ``acceleration`` and
    ``num_low_frequency``.
    """
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        for key, array in arrays.items():
            file.create_dataset(key, data=array)
        file.create_dataset("ismrmrd_header", data=np.bytes_(header))
        for key, value in attrs.items():
            file.attrs[key] = value


def split_folder(root: str | Path, challenge: str, split: str) -> Path:
    """The folder of one split: ``root/{challenge}_{split}`` if it exists, else ``root/{split}``.

    ``root`` may also be the split folder itself (it then holds .h5 files directly).
    """
    root = Path(root).expanduser()
    for candidate in (root / f"{challenge}_{split}", root / split):
        if candidate.is_dir():
            return candidate
    if root.is_dir() and any(root.glob("*.h5")):
        return root
    if not root.exists():
        raise DataError(
            f"data folder {root} does not exist: expected the folder holding "
            f"{challenge}_{split}/ (run `make data` for the demo dataset)"
        )
    raise DataError(f"{root}: expected a {challenge}_{split}/ or {split}/ folder of .h5 files")


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a JSON-friendly Python value."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def first_nonfinite_slice(kspace: h5py.Dataset, chunk: int = 8) -> int | None:
    """Index of the first slice holding NaN or Inf, reading a few slices at a time."""
    for start in range(0, kspace.shape[0], chunk):
        finite = np.isfinite(kspace[start : start + chunk])
        if not finite.all():
            return start + int(np.argmin(finite.reshape(finite.shape[0], -1).all(axis=1)))
    return None


def read_metadata(path: Path) -> dict[str, Any]:
    """Everything the dataset needs to know about one file.

    Reads the k-space once, to find NaN/Inf values (the result is cached). A file that cannot be
    read gives a record with an "error" entry instead.
    """
    try:
        with h5py.File(path, "r") as file:
            datasets = [key for key in file if isinstance(file[key], h5py.Dataset)]
            kspace = file["kspace"] if "kspace" in datasets else None
            is_complex = kspace is not None and np.issubdtype(kspace.dtype, np.complexfloating)
            record: dict[str, Any] = {
                "keys": sorted(file.keys()),
                "attrs": {key: _plain(file.attrs[key]) for key in ATTR_KEYS if key in file.attrs},
                "shapes": {key: list(file[key].shape) for key in datasets},
                "kspace_complex": is_complex,
                "nonfinite_slice": first_nonfinite_slice(kspace) if is_complex else None,
                "header": None,
                "header_error": None,
            }
            if "ismrmrd_header" not in file:
                record["header_error"] = "no ismrmrd_header"
            else:
                try:
                    record["header"] = vars(parse_header(file["ismrmrd_header"][()]))
                except (ValueError, SyntaxError) as error:
                    record["header_error"] = f"malformed ismrmrd_header ({error})"
    except OSError as error:
        return {"error": f"{path}: not a readable HDF5 file, or truncated ({error})"}
    return record


def check_record(path: Path, record: dict[str, Any], challenge: str, require_target: bool) -> None:
    """Raise DataError, naming the file and what was expected, if it cannot be used."""
    if "error" in record:
        raise DataError(record["error"])
    if "kspace" not in record["keys"]:
        raise DataError(f"{path}: no 'kspace' dataset (expected fastMRI layout)")
    shape = record["shapes"]["kspace"]
    if len(shape) != KSPACE_NDIM[challenge]:
        layout = "(slices, H, W)" if challenge == "singlecoil" else "(slices, coils, H, W)"
        other = "multicoil" if challenge == "singlecoil" else "singlecoil"
        hint = (
            f"; {other} data? set data.challenge={other}"
            if len(shape) == KSPACE_NDIM[other]
            else ""
        )
        raise DataError(
            f"{path}: kspace has shape {tuple(shape)}, expected {challenge} {layout}{hint}"
        )
    if shape[0] == 0:
        raise DataError(f"{path}: kspace has no slices (expected at least one)")
    if not record["kspace_complex"]:
        raise DataError(f"{path}: kspace is real, expected complex values")
    if record["nonfinite_slice"] is not None:
        raise DataError(f"{path}: kspace slice {record['nonfinite_slice']} holds NaN or Inf values")
    if "mask" in record["shapes"] and record["shapes"]["mask"] != [shape[-1]]:
        raise DataError(
            f"{path}: mask has shape {tuple(record['shapes']['mask'])}, expected ({shape[-1]},) "
            "to match the k-space width"
        )
    target_key = TARGET_KEYS[challenge]
    if require_target and target_key not in record["keys"]:
        raise DataError(
            f"{path}: no '{target_key}' target (expected in {challenge} train/val files)"
        )
    target = record["shapes"].get(target_key)
    if target is not None:
        if len(target) != 3 or target[0] != shape[0]:
            raise DataError(
                f"{path}: {target_key} has shape {tuple(target)}, expected ({shape[0]}, h, w)"
            )
        if target[1] > shape[-2] or target[2] > shape[-1]:
            raise DataError(
                f"{path}: {target_key} is {target[1]}x{target[2]}, larger than the k-space image "
                f"{shape[-2]}x{shape[-1]} it must be cropped from"
            )


class SliceDataset(torch.utils.data.Dataset):
    """Slices of the .h5 files in one folder, passed through ``transform``.

    Items are ``transform(kspace, mask, target, attrs, fname, slice_num)`` (fastmri's signature), or
    that tuple itself without a transform. kspace: (H, W) or (coils, H, W) complex64; mask: the
    stored column mask of test files or None; target: (h, w) float32 or None.
    """

    def __init__(
        self,
        folder: str | Path,
        challenge: str,
        transform: Callable | None = None,
        require_target: bool = True,
        cache_dir: str | Path | None = None,
        skip_bad_files: bool = False,
    ) -> None:
        if challenge not in TARGET_KEYS:
            raise DataError(f"challenge must be 'singlecoil' or 'multicoil', got {challenge!r}")
        self.folder = Path(folder)
        self.challenge = challenge
        self.transform = transform
        self.target_key = TARGET_KEYS[challenge]
        files = sorted(self.folder.glob("*.h5"))
        if not files:
            raise DataError(f"{self.folder}: no .h5 files (expected fastMRI-layout volumes)")

        records = self._load_metadata(files, cache_dir)
        self.metadata: dict[str, dict[str, Any]] = {}
        volumes = []
        for path in files:
            record = records[path.name]
            try:
                check_record(path, record, challenge, require_target)
            except DataError as error:
                if not skip_bad_files:
                    raise DataError(
                        f"{error} (data.skip_bad_files=true skips such files)"
                    ) from error
                warnings.warn(f"skipping {error}", stacklevel=2)
                continue
            self.metadata[path.name] = self._slice_attrs(path, record)
            volumes.append(path)
        if len(volumes) < len(files):
            log.warning(
                "skipped %d of %d files in %s", len(files) - len(volumes), len(files), folder
            )
            if not volumes:
                raise DataError(
                    f"{self.folder}: every .h5 file is unusable (expected fastMRI layout)"
                )

        # Test/challenge folders hold no targets: evaluation then only writes reconstructions.
        self.has_targets = all(self.target_key in records[p.name]["keys"] for p in volumes)
        self.slices = [
            (path, index)
            for path in volumes
            for index in range(records[path.name]["shapes"]["kspace"][0])
        ]
        self._handles: dict[Path, h5py.File] = {}
        self._handles_pid = os.getpid()

    def subsample(self, sample_rate: float, volume_sample_rate: float, seed: int) -> None:
        """Keep a seeded random ``volume_sample_rate`` of the volumes, then ``sample_rate`` of
        their slices (fastmri's ``sample_rate`` / ``volume_sample_rate``); at least one each."""
        if volume_sample_rate < 1.0:
            volumes = list(dict.fromkeys(path for path, _ in self.slices))
            keep = max(1, round(len(volumes) * volume_sample_rate))
            kept = set(random.Random(seed).sample(volumes, keep))
            self.slices = [item for item in self.slices if item[0] in kept]
        if sample_rate < 1.0:
            keep = max(1, round(len(self.slices) * sample_rate))
            self.slices = sorted(random.Random(seed).sample(self.slices, keep))

    def _slice_attrs(self, path: Path, record: dict[str, Any]) -> dict[str, Any]:
        """File attributes plus the header geometry the transform needs."""
        header = record["header"]
        if header is None:
            kspace_hw = tuple(record["shapes"]["kspace"][-2:])
            target_shape = record["shapes"].get(self.target_key, kspace_hw)
            target_hw = (min(target_shape[-2], kspace_hw[0]), min(target_shape[-1], kspace_hw[1]))
            warnings.warn(
                f"{path}: {record['header_error']}; using array shapes (no padding, recon size "
                f"{target_hw[0]}x{target_hw[1]})",
                stacklevel=2,
            )
            header = vars(header_from_shapes(kspace_hw, target_hw))
        return {**record["attrs"], **header}

    @staticmethod
    def _load_metadata(files: list[Path], cache_dir: str | Path | None) -> dict[str, dict]:
        """Metadata of every file, reusing cached entries whose version, size and mtime match."""
        cache_path = None
        cached: dict[str, dict] = {}
        if cache_dir is not None:
            folder_key = hashlib.sha1(str(files[0].parent.resolve()).encode()).hexdigest()[:16]
            cache_path = Path(cache_dir) / f"metadata-{folder_key}.json"
            try:
                cached = json.loads(cache_path.read_text())
            except (OSError, ValueError):
                cached = {}

        records, changed = {}, False
        for path in files:
            stat = path.stat()
            stamp = [METADATA_VERSION, stat.st_size, stat.st_mtime_ns]
            entry = cached.get(path.name)
            if entry is None or entry["stamp"] != stamp:
                entry = {"stamp": stamp, **read_metadata(path)}
                changed = True
            records[path.name] = entry

        if cache_path is not None and (changed or len(cached) != len(records)):
            try:
                with atomic_path(cache_path) as temporary:
                    temporary.write_text(json.dumps(records))
            except OSError as error:
                log.warning("could not write metadata cache %s: %s", cache_path, error)
        return records

    def __len__(self) -> int:
        return len(self.slices)

    def _file(self, path: Path) -> h5py.File:
        """This process's open handle of ``path`` (forked workers open their own)."""
        if self._handles_pid != os.getpid():
            self._handles, self._handles_pid = {}, os.getpid()
        if path not in self._handles:
            self._handles[path] = h5py.File(path, "r")
        return self._handles[path]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __getitem__(self, index: int) -> Any:
        path, slice_num = self.slices[index]
        file = self._file(path)
        kspace = file["kspace"][slice_num]
        mask = file["mask"][()] if "mask" in file else None
        target = file[self.target_key][slice_num] if self.target_key in file else None
        attrs = self.metadata[path.name]
        if self.transform is None:
            return kspace, mask, target, attrs, path.name, slice_num
        return self.transform(kspace, mask, target, attrs, path.name, slice_num)
