"""How close the training step is to the processor's limit: achieved FLOP rate vs torch.mm's.

    .venv/bin/python scripts/benchmark_flops.py [--root data/demo]   # prints the section

The step is ``mri_recon.training.step.train_step`` on the default U-Net (the config
``mri-recon-train`` composes, batch and image size of the demo) with a batch in memory. Its
FLOPs are counted once by ``torch.utils.flop_counter.FlopCounterMode``, which adds up every
convolution and matrix product of the forward and backward pass from the layers' shapes
(normalization, activations and the optimizer are not counted: they are memory-bound and a few
percent of the FLOPs). The reference is a square ``torch.mm`` on the same cores in the same
precision, and a large 3x3 convolution (on AMD CPUs MKL's torch.mm uses part of the core and
oneDNN's convolution is the faster of the two). Beside them, the step's convolutions timed alone
(each layer's forward and backward at the shapes it sees in the step): the rate these kernels
reach at these sizes, the ceiling of the step with them.
A profile of the step (top operators by self time) follows the table.
"""

import argparse
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from benchmark_train import (
    as_sample,
    median_milliseconds,
    step_milliseconds,
    timed_milliseconds,
    train_config,
)
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from mri_recon.data.loaders import TrainingData
from mri_recon.data.transforms import Sample
from mri_recon.models.interface import model_output, takes
from mri_recon.runtime import Runtime, cpu_has_native_bf16
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step

MM_SIZE = 2048
PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16}
CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
LARGE_CONV = (8, 256, 64, 64)


def best_gflops(call: Callable[[], object], flops: int, device: str, rounds: int = 10) -> float:
    """GFLOP/s of ``call`` (``flops`` each): the best of ``rounds`` after three warm-up calls
    (the first bf16 products on a CPU with AMX run far slower than the later ones)."""
    for _ in range(3):
        call()
    seconds = min(timed_milliseconds(call, device) for _ in range(rounds)) / 1000
    return flops / seconds / 1e9


def matmul_gflops(dtype: torch.dtype, device: str) -> float:
    """GFLOP/s of a ``MM_SIZE`` square torch.mm."""
    a = torch.randn(MM_SIZE, MM_SIZE, device=device).to(dtype)
    b = torch.randn(MM_SIZE, MM_SIZE, device=device).to(dtype)
    return best_gflops(partial(torch.mm, a, b), 2 * MM_SIZE**3, device)


def large_convolution_gflops(dtype: torch.dtype, device: str) -> float:
    """GFLOP/s of one large 3x3 convolution (``LARGE_CONV``: batch, channels, height, width),
    the forward pass alone: oneDNN's rate where the kernels are at their best. On AMD CPUs
    MKL's torch.mm leaves part of the core unused, so this can be the higher reference."""
    batch, chans, height, width = LARGE_CONV
    x = torch.randn(batch, chans, height, width, device=device).to(dtype)
    weight = torch.randn(chans, chans, 3, 3, device=device).to(dtype)
    flops = 2 * batch * chans * chans * 9 * height * width
    return best_gflops(partial(F.conv2d, x, weight, padding=1), flops, device)


class Step(NamedTuple):
    """What one timed training step needs: the state, runtime, a batch in memory and the clip."""

    state: TrainState
    runtime: Runtime
    batch: Sample
    clip: float | None

    def run(self) -> None:
        """One ``train_step`` on the batch."""
        train_step(self.state, self.batch, self.runtime, self.clip)

    def milliseconds(self) -> float:
        return step_milliseconds(self.state, self.runtime, self.batch, self.clip)


def default_step(root: Path, precision: str, device: str, overrides: Sequence[str] = ()) -> Step:
    """The default training state (with ``overrides``) in ``precision`` and a batch of the
    demo's training loader (every field of the Sample, so any configured loss works)."""
    settings = [f"trainer.precision={precision}", "data.num_workers=0", *overrides]
    cfg = train_config(root, settings)
    runtime = Runtime.create(device, precision, "auto")
    torch.manual_seed(0)
    state = TrainState.create(cfg, runtime, steps_per_epoch=1000)
    batch = as_sample(next(iter(TrainingData(cfg, torch.device("cpu")).train_loader)))
    return Step(state, runtime, batch, cfg.trainer.gradient_clip_val)


def step_flops(step: Step) -> int:
    """FLOPs of one training step (forward and backward convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter:
        step.run()
    return counter.get_total_flops()


def convolution_inputs(step: Step) -> list[tuple[nn.Module, torch.Tensor]]:
    """Every convolution layer of the step's model, with an input like the one it sees in the
    step (shape, dtype under the runtime's autocast, whether a gradient flows back to it)."""
    seen: list[tuple[nn.Module, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple) -> None:
        x = args[0]
        seen.append((module, torch.randn_like(x).requires_grad_(x.requires_grad)))

    layers = [m for m in step.state.model.modules() if isinstance(m, CONVOLUTIONS)]
    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        model_output(step.state.module, takes(step.state.model), step.batch, step.runtime)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def layer_forward_backward(layer: nn.Module, x: torch.Tensor, runtime: Runtime) -> None:
    """One layer's forward (under the runtime's autocast) and backward, its gradients written
    fresh as in the step (which sets them to None first), not added to earlier ones."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    with runtime.autocast():
        y = layer(x)
    y.backward(torch.ones_like(y))


def convolutions_alone(step: Step, rounds: int) -> tuple[int, float]:
    """FLOPs and milliseconds of the step's convolutions on their own: each layer's forward
    and backward on an input of the shape it sees in the step, timed alone (median of
    ``rounds`` after two warm-up calls), summed over the layers. Their rate is the most the step
    could reach with these kernels if everything else (normalization, activations, pooling,
    the loss and the optimizer) took no time."""
    flops, milliseconds = 0, 0.0
    for layer, x in convolution_inputs(step):
        forward_backward = partial(layer_forward_backward, layer, x, step.runtime)
        with FlopCounterMode(display=False) as counter:
            forward_backward()
        flops += counter.get_total_flops()
        device = step.runtime.device.type
        milliseconds += median_milliseconds(forward_backward, device, rounds, warmup=2)
    step.state.model.zero_grad(set_to_none=True)
    return flops, milliseconds


def profile_table(step: Step, rows: int = 8) -> str:
    """The step's top operators by self CPU time (torch.profiler), as text."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(3):
            step.run()
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return table.strip()


def run(root: Path, device: str = "cpu", rounds: int = 5) -> str:
    """The utilization section of docs/benchmarks.md."""
    native = device == "cuda" or cpu_has_native_bf16()
    precisions = ["32", "bf16"] if native else ["32"]
    lines = [
        "| precision | ms/step | GFLOP/step | step GFLOP/s | torch.mm GFLOP/s | **step / mm** "
        "| large conv GFLOP/s | step / large conv | step's convolutions alone: ms, GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    profiles = []
    for precision in precisions:
        step = default_step(root, precision, device)
        flops = step_flops(step)
        ms = median_milliseconds(step.run, device, rounds, warmup=3)
        achieved = flops / (ms / 1000) / 1e9
        conv_flops, conv_ms = convolutions_alone(step, rounds)
        mm = matmul_gflops(PRECISIONS[precision], device)
        large = large_convolution_gflops(PRECISIONS[precision], device)
        lines.append(
            f"| {precision} | {ms:.0f} | {flops / 1e9:.1f} | {achieved:.0f} | {mm:.0f} "
            f"| **{100 * achieved / mm:.0f}%** | {large:.0f} | {100 * achieved / large:.0f}% "
            f"| {conv_ms:.0f}, {conv_flops / (conv_ms / 1000) / 1e9:.0f} |"
        )
        profiles += [f"Profile, {precision} (3 steps):", "", "```", profile_table(step), "```", ""]
    if not native:
        lines.append("| bf16 | not measured: this CPU has no native bf16 | | | | | | | |")
    return "\n".join([*lines, "", *profiles])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(run(args.root.resolve(), args.device))


if __name__ == "__main__":
    main()
