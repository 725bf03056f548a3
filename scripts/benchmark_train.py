"""Training throughput: ours vs the fastMRI recipe, through the step training runs.

    .venv/bin/python scripts/benchmark_train.py [--root data/demo] [--steps 30]

Both recipes are timed through ``mri_recon.training.step.train_step``, the function every
training step calls (forward under the configured precision and memory format, L1 loss,
backward, clipping, finite check, optimizer and scheduler), fed by their own data paths:

- ours: the default training config (GroupNorm U-Net, Adam, cosine schedule, clip 1.0) built as
  ``mri-recon-train`` builds it (``TrainState.create``, ``TrainingData``);
- fastMRI: fastmri.data.SliceDataset + UnetDataTransform, fastmri.models.Unet (InstanceNorm),
  RMSprop lr 1e-3, no clipping.

Same chans (32), pooling layers (4), batch size, DataLoader workers and masks (4x/8x mix).
"""

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import fastmri.data
import torch
from fastmri.data.subsample import RandomMaskFunc
from fastmri.data.transforms import UnetDataTransform
from fastmri.models import Unet as FastmriUnet
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mri_recon.config import CONFIG_DIR
from mri_recon.data.dataset import split_folder
from mri_recon.data.loaders import TrainingData, worker_count
from mri_recon.data.transforms import Sample
from mri_recon.models.unet import count_parameters
from mri_recon.runtime import Runtime
from mri_recon.schedulers import Horizon, constant
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step


def train_config(root: Path, overrides: Iterable[str] = ()) -> DictConfig:
    """The `train` config as `mri-recon-train data.root=ROOT ...` composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", [f"data.root={root}", "data.cache_dir=null", *overrides])


def batches(loader: torch.utils.data.DataLoader) -> Iterable:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def as_images(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) images and targets from our Sample or fastmri's UnetSample ((B, H, W))."""
    if batch.image.dim() == 3:
        return batch.image.unsqueeze(1), batch.target.unsqueeze(1)
    return batch.image, batch.target


def as_sample(batch: Any) -> Sample:
    """Our Sample as it is (every field: a loss in the file's units needs mean, std and maximum);
    fastmri's UnetSample as a Sample of its (B, 1, H, W) images and targets."""
    return batch if isinstance(batch, Sample) else Sample(*as_images(batch))


def slices_per_second(
    state: TrainState, loader, runtime: Runtime, clip: float | None, steps: int, warmup: int = 3
) -> float:
    """Training slices per second over ``steps`` calls of ``train_step`` after ``warmup`` ones
    (data loading included)."""
    stream = batches(loader)
    done, start = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        sample = as_sample(next(stream))
        train_step(state, sample, runtime, clip)
        done += sample.image.shape[0] if step >= warmup else 0
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def fastmri_recipe(
    cfg: DictConfig, runtime: Runtime
) -> tuple[TrainState, torch.utils.data.DataLoader]:
    """The fastMRI U-Net baseline's model, optimizer and data path at ``cfg``'s sizes."""
    masks = RandomMaskFunc(list(cfg.mask.center_fractions), list(cfg.mask.accelerations))
    dataset = fastmri.data.SliceDataset(
        split_folder(cfg.data.root, "singlecoil", "train"),
        "singlecoil",
        UnetDataTransform("singlecoil", masks, use_seed=False),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        num_workers=worker_count(cfg.data.num_workers),
    )
    model = runtime.place(FastmriUnet(1, 1, cfg.model.chans, cfg.model.num_pool_layers))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    state = TrainState(model, optimizer, constant(optimizer, Horizon(0), 0), config={})
    return state, loader


def run(root: Path, steps: int, repeats: int) -> tuple[str, float]:
    """The training section of docs/benchmarks.md, and our training slices/s."""
    cfg = train_config(root, ["trainer.precision=32"])
    runtime = Runtime.create("cpu", "32")
    data = TrainingData(cfg, torch.device("cpu"))
    ours = TrainState.create(cfg, runtime, steps_per_epoch=len(data.train_loader))
    theirs, theirs_loader = fastmri_recipe(cfg, runtime)
    ours_runs, theirs_runs = [], []
    for _ in range(repeats):  # interleaved
        ours_runs.append(
            slices_per_second(
                ours, data.train_loader, runtime, cfg.trainer.gradient_clip_val, steps
            )
        )
        theirs_runs.append(slices_per_second(theirs, theirs_loader, runtime, None, steps))
    ours_rate, theirs_rate = statistics.median(ours_runs), statistics.median(theirs_runs)
    table = "\n".join(
        [
            f"Batch {cfg.data.batch_size}, {worker_count(cfg.data.num_workers)} DataLoader workers, fp32, "
            f"{steps} steps after 3 warm-up steps, median of {repeats} interleaved repeats, demo "
            f"single-coil training files (128x128), {count_parameters(ours.model):,} vs "
            f"{count_parameters(theirs.model):,} parameters. Both timed through "
            "`mri_recon.training.step.train_step`, the function training runs.",
            "",
            "| recipe | training slices/s | ratio |",
            "|---|---|---|",
            f"| ours (GroupNorm U-Net, Adam, our data path) | {ours_rate:.2f} | "
            f"{ours_rate / theirs_rate:.2f}x |",
            "| fastMRI (fastmri Unet with InstanceNorm, RMSprop, SliceDataset + "
            f"UnetDataTransform) | {theirs_rate:.2f} | 1.00x |",
        ]
    )
    return table, ours_rate


STEP_VARIANTS = [  # (label, precision, channels_last, compile)
    ("fp32", "32", False, False),
    ("fp32, channels_last", "32", True, False),
    ("bf16 autocast", "bf16", False, False),
    ("bf16 autocast, channels_last", "bf16", True, False),
    ("bf16 autocast, torch.compile", "bf16", False, True),
]


def timed_milliseconds(call: Callable[[], object], device: str) -> float:
    """Milliseconds of one ``call()``, waiting for the GPU (before and after) where there is
    one."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if device == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def median_milliseconds(
    call: Callable[[], object], device: str, repeats: int, warmup: int = 1
) -> float:
    """Median milliseconds of ``repeats`` timed ``call()``s after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    return statistics.median(timed_milliseconds(call, device) for _ in range(repeats))


def step_milliseconds(state: TrainState, runtime: Runtime, batch: Sample, clip) -> float:
    """Milliseconds of one ``train_step`` on a batch already in memory (no data loading)."""
    return timed_milliseconds(partial(train_step, state, batch, runtime, clip), runtime.device.type)


def step_variants(cfg: DictConfig, device: str, rounds: int = 5) -> list[tuple[str, float]]:
    """(variant, median ms per ``train_step``) of our default model and of fastmri's Unet, each
    precision / memory format / compile variant, median of ``rounds`` interleaved rounds."""
    generator = torch.Generator().manual_seed(0)
    size = (cfg.data.batch_size, 1, 128, 128)
    batch = Sample(torch.randn(size, generator=generator), torch.randn(size, generator=generator))
    runs: dict[str, tuple[TrainState, Runtime, float | None]] = {}
    for label, precision, channels_last, compiled in STEP_VARIANTS:
        runtime = Runtime.create(device, precision, channels_last)
        torch.manual_seed(0)
        state = TrainState.create(cfg, runtime, steps_per_epoch=1000)
        state.module = runtime.training_module(state.model, compiled)
        runs[f"ours, {label}"] = (state, runtime, cfg.trainer.gradient_clip_val)
    for label, precision in (("fp32", "32"), ("bf16 autocast", "bf16")):
        runtime = Runtime.create(device, precision, False)
        model = runtime.place(FastmriUnet(1, 1, cfg.model.chans, cfg.model.num_pool_layers))
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
        state = TrainState(model, optimizer, constant(optimizer, Horizon(0), 0), config={})
        runs[f"fastmri Unet, {label}"] = (state, runtime, None)
    for state, runtime, clip in runs.values():  # warm-up (and compilation)
        for _ in range(3):
            step_milliseconds(state, runtime, batch, clip)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (state, runtime, clip) in runs.items():
            times[name].append(step_milliseconds(state, runtime, batch, clip))
    return [(name, statistics.median(values)) for name, values in times.items()]


def precision_section(root: Path, device: str = "cpu") -> str:
    """The bf16 / channels_last / compile table of docs/benchmarks.md."""
    cfg = train_config(root)
    rows = step_variants(cfg, device)
    reference = rows[0][1]
    lines = [
        f"U-Net chans {cfg.model.chans}, {cfg.model.num_pool_layers} pooling layers, batch "
        f"{cfg.data.batch_size}, 128x128, one `train_step` (forward, L1, backward, clip, optimizer, "
        f"scheduler) on a batch in memory, median of 5 interleaved rounds after 3 warm-up steps, "
        f"on {device}.",
        "",
        "| variant | ms/step | vs ours fp32 |",
        "|---|---|---|",
        *[f"| {name} | {ms:.0f} | {reference / ms:.2f}x |" for name, ms in rows],
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.root.resolve(), args.steps, args.repeats)[0])
    print(precision_section(args.root.resolve()))


if __name__ == "__main__":
    main()
