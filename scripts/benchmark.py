"""`make bench`: every benchmark in one run, written to docs/benchmarks.md.

    .venv/bin/python scripts/benchmark.py [--root data/demo] [--out docs/benchmarks.md]

Each figure is measured side by side with its peer in the same run.
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import benchmark_data
import benchmark_flops
import benchmark_quality
import benchmark_train
import benchmark_tv
import benchmark_varnet
import soak
import torch

from mri_recon.runtime import cpu_has_native_bf16


def cpu_flags() -> str:
    """The bf16-related flags of this CPU, as /proc/cpuinfo lists them."""
    if not Path("/proc/cpuinfo").exists():
        return "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2")
            return ", ".join(flag for flag in line.split() if flag in wanted) or "none of them"
    return "unknown"


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


FLOPS_INTRO = (
    "The default U-Net's training step (`train_step`, a demo batch in memory) as FLOPs per "
    "second, its FLOPs counted from its layers by `torch.utils.flop_counter.FlopCounterMode` "
    "(convolutions and matrix products, forward and backward), against a 2048x2048 `torch.mm` "
    "on the same cores in the same precision and a large 3x3 convolution (8x256x64x64; on AMD "
    "CPUs MKL's product uses part of the core), with the step's own convolutions timed alone "
    "at its shapes (the kernels' ceiling for this step). Alone: `.venv/bin/python "
    "scripts/benchmark_flops.py`. On a GPU (`--device cuda`) the same table applies; none was "
    "measured here."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--volumes", type=int, default=2, help="demo val volumes for TV vs BART")
    parser.add_argument("--budget", type=float, default=180.0, help="time-to-quality seconds")
    parser.add_argument("--seeds", type=int, default=3, help="time-to-quality runs per budget")
    parser.add_argument(
        "--make-train-seeds", type=int, default=1, help="runs of ours vs the recipe at 3x"
    )
    parser.add_argument("--quality-epochs", type=int, default=3, help="fp32 vs bf16 epochs")
    args = parser.parse_args()
    root = args.root.resolve()

    started = time.strftime("%Y-%m-%d")
    data_section, data_rate = benchmark_data.run(args.repeats)
    train_section, train_rate = benchmark_train.run(root, steps=30, repeats=args.repeats)
    precision_section = benchmark_train.precision_section(root)
    flops_section = benchmark_flops.run(root)
    quality_section = benchmark_quality.run(root, args.budget, args.seeds)
    make_train_section = benchmark_quality.at_make_train(root, 3.0, args.make_train_seeds)
    bf16_section = benchmark_quality.precision_quality(root, args.quality_epochs)
    varnet_section = benchmark_varnet.run(root)
    samples = soak.soak(args.root, "singlecoil", epochs=20, num_workers=0, train=False)
    with tempfile.TemporaryDirectory() as tmp:
        benchmark_data.make_data(
            Path(tmp), ["size=release", "volumes.train=1", "challenges=[multicoil]"]
        )
        release = soak.soak(Path(tmp), "multicoil", epochs=10, num_workers=0, train=False)
    sections = [
        "# Benchmarks",
        "",
        f"Measured {started} on {machine()}; CPU flags: {cpu_flags()} (native bf16: "
        f"{'yes' if cpu_has_native_bf16() else 'no'}, as torch detects it).",
        "",
        "Command: `make bench` (= `.venv/bin/python scripts/benchmark.py`), after `make data`.",
        "Every ratio compares two things measured side by side in the same run.",
        "",
        "## Data path: dataset + zero-filled transform (ours vs fastmri)",
        "",
        "Ours reads the slice, draws the mask, inverse-transforms the readout of the sampled "
        "columns only, crops to the target rows, then maps the sampled columns to the kept image "
        "columns with one matrix product (`mri_recon/data/transforms.py`). Reading only the "
        "sampled columns from the file was measured slower than reading the slice (h5py, "
        "contiguous layout: 12 ms vs 7 ms for a 15-coil release slice), so the whole slice is "
        "read.",
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
        "## Precision, memory format and torch.compile (the training step)",
        "",
        precision_section,
        "",
        "`trainer.precision=auto` picks bf16 where the CPU has native bf16 (above: "
        f"{'yes' if cpu_has_native_bf16() else 'no'}); `trainer.channels_last=auto` keeps the "
        "CPU on the default layout (channels_last is slower there with GroupNorm, most of all "
        "under bf16); `trainer.compile` stays off by default (its gain is small on the CPU and "
        "the first step compiles for about a minute).",
        "",
        "## How close the training step is to the processor's limit",
        "",
        FLOPS_INTRO,
        "",
        flops_section,
        "## Quality under bf16",
        "",
        "`mri-recon-train` with the default config on the demo data, the same epochs in fp32 "
        "(`trainer.precision=32`) and in bf16 (`trainer.precision=bf16`); final validation "
        "metrics (demo val split, 4x/8x masks fixed per file). Command: part of `make bench`.",
        "",
        bf16_section,
        "",
        "## Time to quality (ours vs the fastMRI recipe, fp32 and bf16)",
        "",
        "Command: part of `make bench`; alone: `.venv/bin/python scripts/benchmark_quality.py`.",
        "",
        quality_section,
        "",
        "At `make train`'s training time on this CPU (its max_epochs' steps at the measured rate, "
        "at most 300 s), ours against the fastMRI recipe given 3x that time, both in the "
        "precision `auto` picks; alone: `.venv/bin/python scripts/benchmark_quality.py "
        "--at-make-train 3 --seeds 1`.",
        "",
        make_train_section,
        "",
        varnet_section,
        "## TV compressed sensing and U-Net inference",
        "",
        benchmark_tv.run(args.root, args.volumes, [100, 300]),
        "## Memory soak",
        "",
        f"20 epochs of the data path over the demo single-coil training files (`num_workers=0`, so "
        f"every file handle lives in this process): resident memory {samples[0]:.0f} MB after "
        f"epoch 1, {samples[-1]:.0f} MB after epoch 20, growth **{100 * soak.growth(samples):+.2f}%** "
        "(goal < 5%). At release size (one 15-coil 640x368 volume of 20 slices, multi-coil, "
        f"10 epochs): {release[0]:.0f} MB after epoch 1, {release[-1]:.0f} MB after epoch 10, "
        f"growth **{100 * soak.growth(release):+.2f}%**. `scripts/soak.py --train "
        "--num-workers 2` runs the same with training steps and workers.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
