"""Data-path throughput: our SliceDataset + ZeroFilledTransform vs fastmri's SliceDataset +
UnetDataTransform, on the same demo files, measured side by side in one run; the device-side
transform's batched throughput; the feed ratio of a GPU node.

    .venv/bin/python scripts/benchmark_data.py [--repeats 3]

Generates demo files at the default size and at release size (640x368 k-space, 320x320 targets,
15 coils) into a temporary folder, then reads every training slice with a random mask at 4x and
at 8x, num_workers=0, one thread (= slices/s per core).
"""

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import fastmri.data
import torch
from benchmark_train import median_milliseconds
from fastmri.data.subsample import RandomMaskFunc
from fastmri.data.transforms import UnetDataTransform
from hydra import compose, initialize_config_dir

from mri_recon.config import CONFIG_DIR
from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.data.demo_dataset import generate
from mri_recon.data.transforms import DeviceTransform, ZeroFilledTransform

SIZES = {
    "default (256x144 k-space, 128x128 target)": ["size=demo", "volumes.train=4"],
    "release (640x368 k-space, 320x320 target)": ["size=release", "volumes.train=1"],
}
CENTER_FRACTIONS = {4: 0.08, 8: 0.04}
# On paper: one 320x320 slice through the default U-Net (chans 32, 4 pools) costs about
# 43 GFLOP forward, ~3x that for a training step; an H100 SXM's dense bf16 peak is 989 TFLOP/s.
STEP_GFLOP_PER_SLICE, H100_BF16_TFLOPS, GPU_UTILIZATION, NODE_CORES = 130.0, 989.0, 0.30, 16


def make_data(out: Path, overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("data_gen", [f"out={out}", "volumes.val=0", "volumes.test=0", *overrides])
    generate(cfg)


def slices_per_second(dataset: torch.utils.data.Dataset) -> float:
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - start)


def masks(acceleration: int) -> RandomMaskFunc:
    return RandomMaskFunc([CENTER_FRACTIONS[acceleration]], [acceleration])


def measure(root: Path, challenge: str, acceleration: int, repeats: int) -> dict[str, float]:
    """Median slices/s of ours, ours reading and masking only (on_device), and fastmri."""
    folder = split_folder(root, challenge, "train")
    datasets = {
        "ours": SliceDataset(
            folder, challenge, ZeroFilledTransform(challenge, masks(acceleration), False)
        ),
        "read and mask": SliceDataset(
            folder,
            challenge,
            ZeroFilledTransform(challenge, masks(acceleration), False, on_device=True),
        ),
        "fastmri": fastmri.data.SliceDataset(
            folder, challenge, UnetDataTransform(challenge, masks(acceleration), use_seed=False)
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in datasets}
    for _ in range(repeats):  # interleaved, so all see the same machine state
        for name, dataset in datasets.items():
            runs[name].append(slices_per_second(dataset))
    return {name: statistics.median(values) for name, values in runs.items()}


def device_transform_rate(root: Path, challenge: str, batch_size: int = 8) -> tuple[float, int]:
    """(slices/s of ``DeviceTransform`` on a batch, bytes per slice the loader hands it)."""
    transform = ZeroFilledTransform(challenge, masks(4), False, on_device=True)
    dataset = SliceDataset(split_folder(root, challenge, "train"), challenge, transform)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(batch_size)])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    apply = DeviceTransform(challenge, device)
    milliseconds = median_milliseconds(partial(apply, batch), device.type, repeats=5)
    moved = sum(
        t.numel() * t.element_size() for t in (batch.masked_kspace, batch.mask, batch.target)
    )
    return 1000 * batch_size / milliseconds, moved // batch_size


def run(repeats: int) -> tuple[str, float]:
    """The data-path section of docs/benchmarks.md, and our default-size single-coil 4x slices/s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows, device_rows, rates = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in SIZES.items():
            root = Path(tmp) / label.split()[0]
            make_data(root, overrides)
            for challenge in ("singlecoil", "multicoil"):
                for acceleration in (4, 8):
                    rate = measure(root, challenge, acceleration, repeats)
                    rates[label.split()[0], challenge, acceleration] = rate
                    rows.append(
                        f"| {label} | {challenge} | {acceleration}x | {rate['ours']:.1f} | "
                        f"{rate['fastmri']:.1f} | **{rate['ours'] / rate['fastmri']:.2f}x** | "
                        f"{rate['read and mask']:.1f} |"
                    )
                    print(rows[-1], flush=True)
                per_second, moved = device_transform_rate(root, challenge)
                device_rows.append(
                    f"| {label} | {challenge} | {per_second:.1f} | {moved / 2**20:.2f} MiB |"
                )
    torch.set_num_threads(threads)
    sections = [
        "Every training slice read once per repeat with a random mask, `num_workers=0`, one "
        f"thread (so: per core), median of {repeats} interleaved repeats, the same files for "
        "all. 'read and mask' is what a worker does when the transform runs on the device "
        "(`data.transform_on=device`).",
        "",
        "| size | challenge | accel | ours (slices/s) | fastmri (slices/s) | ours / fastmri | "
        "read and mask only (slices/s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "### Device-side transform (`DeviceTransform`), batched",
        "",
        f"Batches of 8 slices at 4x, one thread, on {'CUDA' if torch.cuda.is_available() else 'the CPU'}"
        " (GPU: not measured, no GPU here); bytes per slice = masked k-space + mask + target "
        "handed over by the loader.",
        "",
        "| size | challenge | slices/s | bytes per slice |",
        "|---|---|---|---|",
        *device_rows,
        "",
        feed_ratio(rates),
    ]
    return "\n".join(sections), rates["default", "singlecoil", 4]["ours"]


def feed_ratio(rates: dict) -> str:
    """The on-paper feed ratio of a 16-core GPU node at release size."""
    gpu = H100_BF16_TFLOPS * 1e3 * GPU_UTILIZATION / STEP_GFLOP_PER_SLICE
    lines = [
        "### Feed ratio of a GPU node (on paper)",
        "",
        f"GPU side, estimated (no GPU was measured): {STEP_GFLOP_PER_SLICE:.0f} GFLOP per "
        f"320x320 training slice (default U-Net, forward ~43 GFLOP, step ~3x), an H100 at "
        f"{GPU_UTILIZATION:.0%} of its {H100_BF16_TFLOPS:.0f} TFLOP/s dense bf16 peak: "
        f"**{gpu:,.0f} slices/s**. Data side: the release-size 4x rates above times "
        f"{NODE_CORES} worker cores.",
        "",
        "| challenge | transform in | slices/s per core | x 16 cores | feed ratio (>= 1: GPU fed) |",
        "|---|---|---|---|---|",
    ]
    for challenge in ("singlecoil", "multicoil"):
        rate = rates["release", challenge, 4]
        for where, key in (
            ("workers", "ours"),
            ("device", "read and mask"),
            ("fastmri", "fastmri"),
        ):
            node = rate[key] * NODE_CORES
            lines.append(
                f"| {challenge} | {where} | {rate[key]:.1f} | {node:,.0f} | {node / gpu:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.repeats)[0])


if __name__ == "__main__":
    main()
