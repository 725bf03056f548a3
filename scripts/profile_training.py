"""Where a training run's time goes: ``mri-recon-train``'s own loop, in this process, with its
epochs split into the training step, waiting for batches, validation and the end of the epoch
(checkpoints, TensorBoard), then the kernels of one step (torch.profiler).

    .venv/bin/python scripts/profile_training.py [--epochs 4] [OVERRIDES...]

The loop's functions are timed where the loop calls them (``loop.train_step``, ``loop.validate``,
``Training.end_epoch``, ``Training.train_epoch``); nothing else changes. ``train_step`` reads the
step's loss on the host, so its time is the host's work or the device's, whichever is longer. The
second table profiles ``--profile-steps`` steps of the same model on one batch: kernels a step
and the device's busy milliseconds a step against the step's wall time. A step whose device time
is far below its wall time is bound by the host (launching kernels), not by the GPU.
"""

import argparse
import functools
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from benchmark_train import train_config

from mri_recon.config import PROJECT_DIR
from mri_recon.data.loaders import TrainingData
from mri_recon.runtime import Runtime
from mri_recon.training import loop
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step

SECONDS: dict[str, list[float]] = defaultdict(list)
STEPS_AT_EPOCH_END: list[int] = []  # how many steps had run when each epoch's training ended


def timed(name: str, function: Callable) -> Callable:
    """``function``, its seconds appended to ``SECONDS[name]`` at each call."""

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[name].append(time.perf_counter() - start)
            if name == "training":
                STEPS_AT_EPOCH_END.append(len(SECONDS["step"]))

    return wrapper


def epoch_parts() -> dict[str, list[float]]:
    """Seconds of each part in each epoch."""
    bounds = [0, *STEPS_AT_EPOCH_END]
    steps = [sum(SECONDS["step"][a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    validation = SECONDS["validation"]  # one an epoch (a budget run may skip some)
    return {
        "training steps": steps,
        "waiting for batches (and counting steps)": [
            t - s for t, s in zip(SECONDS["training"], steps, strict=True)
        ],
        "validation": validation,
        "end of epoch besides validation (TensorBoard, checkpoints)": [
            e - v for e, v in zip(SECONDS["end of epoch"], validation, strict=False)
        ],
        "whole epoch": [
            t + e for t, e in zip(SECONDS["training"], SECONDS["end of epoch"], strict=True)
        ],
    }


def epoch_table() -> list[str]:
    """Seconds an epoch in each part: the first epoch, the median of the others."""
    lines = ["| part | epoch 1 (s) | later epochs (median s) |", "|---|---|---|"]
    for name, values in epoch_parts().items():
        later = f"{statistics.median(values[1:]):.3f}" if len(values) > 1 else "-"
        lines.append(f"| {name} | {values[0]:.3f} | {later} |")
    steps = SECONDS["step"]
    return [*lines, "", f"{len(steps)} steps, median {1000 * statistics.median(steps):.1f} ms."]


def run_training(epochs: int, overrides: list[str]) -> None:
    """The loop, its parts timed, for ``epochs`` epochs of the configured run."""
    loop.train_step = timed("step", loop.train_step)
    loop.validate = timed("validation", loop.validate)
    loop.Training.end_epoch = timed("end of epoch", loop.Training.end_epoch)
    loop.Training.train_epoch = timed("training", loop.Training.train_epoch)
    cfg = train_config(PROJECT_DIR / "data" / "demo", overrides)
    cfg.trainer.max_epochs, cfg.trainer.max_time = epochs, None
    with tempfile.TemporaryDirectory() as run_dir:
        loop.fit(cfg, Path(run_dir), overrides)


def kernel_table(overrides: list[str], steps: int) -> list[str]:
    """Kernels a step of the configured model on one batch, the milliseconds they ran (the
    device's busy time) and the step's wall milliseconds."""
    cfg = train_config(PROJECT_DIR / "data" / "demo", overrides)
    trainer = cfg.trainer
    runtime = Runtime.create(
        trainer.device, trainer.precision, trainer.channels_last, trainer.deterministic
    )
    data = TrainingData(cfg, runtime.device)
    state = TrainState.create(cfg, runtime, len(data.train_loader))
    batch = next(iter(data.train_loader))
    for _ in range(3):  # warm-up (cuDNN's choices, the allocator)
        train_step(state, batch, runtime, trainer.gradient_clip_val)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if runtime.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(steps):
            train_step(state, batch, runtime, trainer.gradient_clip_val)
    wall_ms = 1000 * (time.perf_counter() - start) / steps
    kernels = [e for e in profile.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1000 / steps
    return [
        "| device | kernels a step | device busy (ms a step) | wall (ms a step, profiled) |",
        "|---|---|---|---|",
        f"| {runtime.describe()} | {len(kernels) / steps:.0f} | {busy_ms:.2f} | {wall_ms:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("overrides", nargs="*", help="mri-recon-train overrides")
    args = parser.parse_args()
    run_training(args.epochs, args.overrides)
    print("\n".join(epoch_table()) + "\n")
    print("\n".join(kernel_table(args.overrides, args.profile_steps)))


if __name__ == "__main__":
    main()
