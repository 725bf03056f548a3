"""Data-path throughput: our SliceDataset + ZeroFilledTransform vs fastmri's SliceDataset +
UnetDataTransform, on the same demo files, measured side by side in one run.

    .venv/bin/python scripts/benchmark_data.py [--repeats 3]

Generates demo files at the default size and at release size (640x368 k-space, 320x320 targets)
into a temporary folder, then reads every training slice with a 4x random mask, num_workers=0.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import fastmri.data
import torch
from fastmri.data.subsample import RandomMaskFunc
from fastmri.data.transforms import UnetDataTransform
from hydra import compose, initialize_config_dir

from mri_recon.config import CONFIG_DIR
from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.data.demo_dataset import generate
from mri_recon.data.transforms import ZeroFilledTransform

SIZES = {
    "default (256x144 k-space, 128x128 target)": ["size=demo", "volumes.train=4"],
    "release (640x368 k-space, 320x320 target)": ["size=release", "volumes.train=2"],
}


def make_data(out: Path, overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("data_gen", [f"out={out}", "volumes.val=0", "volumes.test=0", *overrides])
    generate(cfg)


def slices_per_second(dataset: torch.utils.data.Dataset) -> float:
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


def measure(root: Path, challenge: str, repeats: int) -> tuple[float, float]:
    folder = split_folder(root, challenge, "train")
    ours = SliceDataset(
        folder, challenge, ZeroFilledTransform(challenge, RandomMaskFunc([0.08], [4]), False)
    )
    theirs = fastmri.data.SliceDataset(
        folder, challenge, UnetDataTransform(challenge, RandomMaskFunc([0.08], [4]), use_seed=False)
    )
    ours_runs, theirs_runs = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine state
        ours_runs.append(slices_per_second(ours))
        theirs_runs.append(slices_per_second(theirs))
    return statistics.median(ours_runs), statistics.median(theirs_runs)


def run(repeats: int) -> tuple[str, float]:
    """The data-path section of docs/benchmarks.md, and our default-size single-coil slices/s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows, rates = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in SIZES.items():
            root = Path(tmp) / label.split()[0]
            make_data(root, overrides)
            for challenge in ("singlecoil", "multicoil"):
                ours, theirs = measure(root, challenge, repeats)
                rates.setdefault("ours", ours)
                rows.append(
                    f"| {label} | {challenge} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |"
                )
                print(rows[-1], flush=True)
    torch.set_num_threads(threads)
    table = "\n".join(
        [
            "Every training slice read once per repeat with a 4x random mask, `num_workers=0`, one "
            f"thread, median of {repeats} interleaved repeats, the same files for both.",
            "",
            "| size | challenge | ours (slices/s) | fastmri (slices/s) | ratio |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    return table, rates["ours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.repeats)[0])


if __name__ == "__main__":
    main()
