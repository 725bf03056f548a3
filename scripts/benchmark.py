"""`make bench`: every benchmark in one run, written to docs/benchmarks.md.

    .venv/bin/python scripts/benchmark.py [--root data/demo] [--out docs/benchmarks.md]

Each figure is measured side by side with its peer in the same run.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import benchmark_data
import benchmark_train
import benchmark_tv
import soak
import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--volumes", type=int, default=2, help="demo val volumes for TV vs BART")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d")
    data_section, data_rate = benchmark_data.run(args.repeats)
    train_section, train_rate = benchmark_train.run(args.root, steps=30, repeats=args.repeats)
    samples = soak.soak(args.root, "singlecoil", epochs=20, num_workers=0, train=False)
    sections = [
        "# Benchmarks",
        "",
        f"Measured {started} on {machine()}.",
        "",
        "Command: `make bench` (= `.venv/bin/python scripts/benchmark.py`), after `make data`.",
        "Every ratio compares two things measured side by side in the same run.",
        "",
        "## Data path: dataset + zero-filled transform (ours vs fastmri)",
        "",
        data_section,
        "",
        "## Training throughput (ours vs the fastMRI recipe)",
        "",
        train_section,
        "",
        f"Data path / training consumption: {data_rate:.0f} slices/s (one thread, default size, "
        f"single-coil) / {train_rate:.2f} slices/s = **{data_rate / train_rate:.0f}x** (goal >= 3x).",
        "",
        "## TV compressed sensing and U-Net inference",
        "",
        benchmark_tv.run(args.root, args.volumes, [100, 300]),
        "## Memory soak",
        "",
        f"20 epochs of the data path over the demo single-coil training files (`num_workers=0`, so "
        f"every file handle lives in this process): resident memory {samples[0]:.0f} MB after "
        f"epoch 1, {samples[-1]:.0f} MB after epoch 20, growth **{100 * soak.growth(samples):+.2f}%** "
        "(goal < 5%). `scripts/soak.py --train --num-workers 2` runs the same with training steps "
        "and workers.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
