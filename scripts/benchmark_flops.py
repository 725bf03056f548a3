"""How close the training step is to the processor's limit: achieved FLOP rate vs torch.mm's.

    .venv/bin/python scripts/benchmark_flops.py [--root data/demo]   # prints the section

The step is ``mri_recon.training.step.train_step`` on the default U-Net (the config
``mri-recon-train`` composes, batch and image size of the demo) with a batch in memory. Its
FLOPs are counted once by ``torch.utils.flop_counter.FlopCounterMode``, which adds up every
convolution and matrix product of the forward and backward pass from the layers' shapes
(normalization, activations and the optimizer are not counted: they are memory-bound and a few
percent of the FLOPs). The reference is a square ``torch.mm`` on the same cores in the same
precision. A profile of the step (top operators by self time) follows the table.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from benchmark_train import as_images, step_milliseconds, train_config
from torch.utils.flop_counter import FlopCounterMode

from mri_recon.data.loaders import TrainingData
from mri_recon.runtime import Runtime, cpu_has_native_bf16
from mri_recon.training.state import TrainState

MM_SIZE = 2048
PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16}


def matmul_gflops(dtype: torch.dtype, device: str, rounds: int = 10) -> float:
    """GFLOP/s of a ``MM_SIZE`` square torch.mm: the best of ``rounds`` after three warm-up
    products (the first bf16 products on a CPU with AMX run far slower than the later ones)."""
    a = torch.randn(MM_SIZE, MM_SIZE, device=device).to(dtype)
    b = torch.randn(MM_SIZE, MM_SIZE, device=device).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * MM_SIZE**3 / min(times) / 1e9


def step_state(root: Path, precision: str, device: str) -> tuple[TrainState, Runtime, tuple]:
    """The default training state in ``precision`` and a batch of the demo's training loader
    (images, targets), in memory."""
    cfg = train_config(root, [f"trainer.precision={precision}", "data.num_workers=0"])
    runtime = Runtime.create(device, precision, "auto")
    torch.manual_seed(0)
    state = TrainState.create(cfg, runtime, steps_per_epoch=1000)
    batch = as_images(next(iter(TrainingData(cfg, torch.device("cpu")).train_loader)))
    return state, runtime, batch


def step_flops(state: TrainState, runtime: Runtime, batch: tuple) -> int:
    """FLOPs of one training step (forward and backward convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter:
        step_milliseconds(state, runtime, batch, clip=1.0)
    return counter.get_total_flops()


def profile_table(state: TrainState, runtime: Runtime, batch: tuple, rows: int = 8) -> str:
    """The step's top operators by self CPU time (torch.profiler), as text."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(3):
            step_milliseconds(state, runtime, batch, clip=1.0)
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return table.strip()


def run(root: Path, device: str = "cpu", rounds: int = 5) -> str:
    """The utilization section of docs/benchmarks.md."""
    native = device == "cuda" or cpu_has_native_bf16()
    precisions = ["32", "bf16"] if native else ["32"]
    lines = [
        "| precision | ms/step | GFLOP/step | step GFLOP/s | torch.mm GFLOP/s | step / mm |",
        "|---|---|---|---|---|---|",
    ]
    profiles = []
    for precision in precisions:
        state, runtime, batch = step_state(root, precision, device)
        flops = step_flops(state, runtime, batch)
        for _ in range(3):  # warm-up
            step_milliseconds(state, runtime, batch, clip=1.0)
        ms = statistics.median(
            step_milliseconds(state, runtime, batch, clip=1.0) for _ in range(rounds)
        )
        achieved = flops / (ms / 1000) / 1e9
        peak = matmul_gflops(PRECISIONS[precision], device)
        lines.append(
            f"| {precision} | {ms:.0f} | {flops / 1e9:.1f} | {achieved:.0f} | {peak:.0f} "
            f"| **{100 * achieved / peak:.0f}%** |"
        )
        profiles += [
            f"Profile, {precision} (3 steps):",
            "",
            "```",
            profile_table(state, runtime, batch),
            "```",
            "",
        ]
    if not native:
        lines.append("| bf16 | not measured: this CPU has no native bf16 | | | | |")
    return "\n".join([*lines, "", *profiles])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(run(args.root.resolve(), args.device))


if __name__ == "__main__":
    main()
