"""VarNet speed: our training step against fastmri.models.VarNet's, seconds per slice, memory.

    .venv/bin/python scripts/benchmark_varnet.py      # prints the docs/benchmarks.md section
    .venv/bin/python scripts/benchmark_varnet.py --equal-time   # the VarNet's steps in the U-Net's time

Both networks are timed through the code users run: ours through
``mri_recon.training.step.train_step`` (the training loop's step: the model interface, the SSIM
loss, clipping, the configured optimizer: fused Adam), fastmri's VarNet through the same loss
and optimizer calls on its own (B, C, H, W, 2) tensors. Equal settings: 4 cascades of chans 12,
sensitivity chans 8, instance norm, full readout (``crop_readout=False``); then ours as
configured by ``experiment=varnet_multicoil`` (GroupNorm, no sensitivity network) in fp32, with
the precision ``auto`` picks, and compiled.
"""

import argparse
import functools
import itertools
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from benchmark_train import median_milliseconds, train_config
from fastmri.losses import SSIMLoss
from fastmri.models import VarNet as FastmriVarNet
from omegaconf import DictConfig, OmegaConf

from mri_recon.config import PROJECT_DIR
from mri_recon.data.loaders import TrainingData
from mri_recon.data.transforms import Sample
from mri_recon.errors import report_user_errors
from mri_recon.losses import StructuralLoss
from mri_recon.models.interface import model_output
from mri_recon.models.varnet import VarNet
from mri_recon.runtime import Runtime
from mri_recon.schedulers import Horizon, constant
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step
from mri_recon.training.validation import validate

DEMO = (8, 256, 144, (128, 128))  # coils, H, W, target
RELEASE = (15, 640, 368, (320, 320))
EQUAL = {"num_cascades": 4, "chans": 12, "sens_chans": 8}


def synthetic_batch(size: tuple, batch: int = 1) -> Sample:
    """A Sample of random masked k-space (4x, 8% center) with the fields a k-space model uses."""
    coils, height, width, crop = size
    generator = torch.Generator().manual_seed(0)
    kspace = torch.randn(batch, coils, height, width, dtype=torch.complex64, generator=generator)
    mask = torch.zeros(batch, width)
    mask[:, ::4] = 1
    center = round(0.08 * width)
    mask[:, width // 2 - center // 2 : width // 2 - center // 2 + center] = 1
    return Sample(
        image=torch.zeros(batch, 1, *crop),
        target=torch.rand(batch, 1, *crop, generator=generator),
        mean=torch.zeros(batch),
        std=torch.ones(batch),
        max_value=torch.ones(batch),
        masked_kspace=kspace * mask[:, None, None, :],
        mask=mask,
        num_low_frequencies=torch.full((batch,), center),
    )


@functools.cache
def experiment_config() -> DictConfig:
    """The training config of ``experiment=varnet_multicoil`` (what users train), composed once."""
    return train_config(Path("data/demo"), ["experiment=varnet_multicoil"])


def configured() -> dict:
    """The VarNet settings of ``experiment=varnet_multicoil``."""
    model = OmegaConf.to_container(experiment_config().model, resolve=True)
    return {key: value for key, value in model.items() if key != "_target_"}


def settings(model: dict) -> str:
    """The network's main settings, as they would be written on the command line."""
    keys = (
        "num_cascades",
        "chans",
        "sens_chans",
        "sens_maps",
        "start",
        "data_consistency",
        "dc_iterations",
        "norm",
        "groups",
        "crop_readout",
    )
    return ", ".join(f"{key}={model[key]}" for key in keys)


def training_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``experiment=varnet_multicoil`` trains with (configs/optimizer: fused
    Adam), for both networks' steps."""
    return hydra.utils.instantiate(experiment_config().optimizer)(params=model.parameters())


def our_state(model: torch.nn.Module) -> TrainState:
    optimizer = training_optimizer(model)
    return TrainState(model, optimizer, constant(optimizer, Horizon(0), 0), {}, StructuralLoss())


def our_step_ms(model: torch.nn.Module, batch: Sample, runtime: Runtime, steps: int) -> float:
    """Median milliseconds of ``train_step`` (after two warm-up steps)."""
    step = functools.partial(train_step, our_state(model), batch, runtime, clip=1.0)
    return median_milliseconds(step, "cpu", steps, warmup=2)


def fastmri_step_ms(model: FastmriVarNet, batch: Sample, steps: int) -> float:
    """Median milliseconds of the same step on fastmri's VarNet (fp32, its tensor layout)."""
    return median_milliseconds(fastmri_step(model, batch), "cpu", steps, warmup=2)


def fastmri_step(model: FastmriVarNet, batch: Sample) -> Callable[[], None]:
    """One training step of fastmri's VarNet on its (B, C, H, W, 2) tensors: the same SSIM
    loss, clipping and optimizer calls as ours, on the batch's device."""
    optimizer, loss_fn = training_optimizer(model), SSIMLoss().to(batch.target.device)
    kspace = torch.view_as_real(batch.masked_kspace)
    mask = batch.mask.bool()[:, None, None, :, None]
    crop = batch.target.shape[-2:]

    def step() -> None:
        output = model(kspace, mask, int(batch.num_low_frequencies[0]))
        top, left = (output.shape[-2] - crop[0]) // 2, (output.shape[-1] - crop[1]) // 2
        output = output[:, None, top : top + crop[0], left : left + crop[1]]
        loss = loss_fn(output, batch.target, batch.max_value)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


@torch.no_grad()
def seconds_per_slice(model: torch.nn.Module, size: tuple, runtime: Runtime) -> float:
    """Inference seconds per slice (median of 3 after one warm-up), through the interface."""
    batch = synthetic_batch(size)
    model.eval()
    call = functools.partial(model_output, model, "kspace", batch, runtime)
    return median_milliseconds(call, "cpu", repeats=3) / 1000


@torch.no_grad()
def fastmri_seconds_per_slice(model: FastmriVarNet, size: tuple) -> float:
    """The same for fastmri's VarNet on its (B, C, H, W, 2) tensors (fp32)."""
    batch = synthetic_batch(size)
    kspace, mask = (
        torch.view_as_real(batch.masked_kspace),
        batch.mask.bool()[:, None, None, :, None],
    )
    model.eval()
    call = functools.partial(model, kspace, mask, int(batch.num_low_frequencies[0]))
    return median_milliseconds(call, "cpu", repeats=3) / 1000


def release_training_memory_mb(runtime: Runtime) -> float:
    """Peak resident memory added by one release-size training step (MB; first thing run)."""
    model = VarNet(**EQUAL)
    batch = synthetic_batch(RELEASE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train_step(our_state(model), batch, runtime, clip=1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def timed_steps(state: TrainState, batches, runtime: Runtime, count: int, clip) -> float:
    """Seconds of ``count`` training steps on the loader's next batches, waits included."""
    start = time.perf_counter()
    for _ in range(count):
        train_step(state, next(batches), runtime, clip)
    return time.perf_counter() - start


def timed_validation(state: TrainState, data: TrainingData, runtime: Runtime) -> float:
    """Seconds of one validation as the training loop runs it (loading, model, metrics)."""
    start = time.perf_counter()
    validate(state, data.val_loader, runtime, [])
    state.model.train()
    return time.perf_counter() - start


def equal_time_steps(root: Path, rounds: int = 3, chunk: int = 24) -> dict[str, float]:
    """The VarNet's training steps in the time of the U-Net's default multi-coil run, both
    measured the way the training loop runs them (their own loaders and workers, precision
    auto), in ``rounds`` interleaved rounds of ``chunk`` steps and one validation each, so the
    shared machine's speed changes hit both alike (medians of the rounds).

    U-Net time = its epochs x (its steps an epoch x its step + its validation); the VarNet's
    epochs = that time over (its steps an epoch x its step + its validation).
    """
    runtime = Runtime.create("cpu", "auto")
    models = {
        "unet": train_config(root, ["data.challenge=multicoil"]),
        "varnet": train_config(root, ["experiment=varnet_multicoil"]),
    }
    runs = {}
    for name, cfg in models.items():
        data = TrainingData(cfg, runtime.device)
        data.start_epoch(0)
        state = TrainState.create(cfg, runtime, len(data.train_loader))
        state.module = state.model
        batches = itertools.cycle(data.train_loader)
        clip = cfg.trainer.gradient_clip_val
        timed_steps(state, batches, runtime, 4, clip)  # warm-up: workers started, first steps
        runs[name] = (data, state, batches, clip)
    times: dict[str, list[float]] = {
        f"{name} {kind}": [] for name in runs for kind in ("step", "val")
    }
    for _ in range(rounds):
        for name, (data, state, batches, clip) in runs.items():
            times[f"{name} step"].append(timed_steps(state, batches, runtime, chunk, clip) / chunk)
            times[f"{name} val"].append(timed_validation(state, data, runtime))
    result = {key: statistics.median(values) for key, values in times.items()}
    epoch = {
        name: len(data.train_loader) * result[f"{name} step"] + result[f"{name} val"]
        for name, (data, *_) in runs.items()
    }
    unet_seconds = models["unet"].trainer.max_epochs * epoch["unet"]
    varnet_epochs = unet_seconds / epoch["varnet"]
    steps = len(runs["varnet"][0].train_loader)
    return {
        **result,
        "unet epochs": models["unet"].trainer.max_epochs,
        "unet steps an epoch": len(runs["unet"][0].train_loader),
        "unet batch": models["unet"].data.batch_size,
        "unet seconds": unet_seconds,
        "varnet epochs": varnet_epochs,
        "varnet steps": varnet_epochs * steps,
    }


def equal_time_lines(root: Path, rounds: int = 3, chunk: int = 24) -> list[str]:
    """The section's paragraph on the VarNet's steps in the U-Net's time."""
    times = equal_time_steps(root, rounds, chunk)
    return [
        "Steps in equal time: the U-Net's default multi-coil run (`data.challenge=multicoil`, "
        f"{times['unet epochs']} epochs of {times['unet steps an epoch']} steps) takes "
        f"{times['unet seconds']:.0f} s here ({1000 * times['unet step']:.0f} ms a step of "
        f"{times['unet batch']} slices, {times['unet val']:.1f} s a "
        f"validation); in that time `experiment=varnet_multicoil` makes "
        f"{times['varnet steps']:.0f} steps ({times['varnet epochs']:.2f} epochs: "
        f"{1000 * times['varnet step']:.0f} ms a step of one slice, {times['varnet val']:.1f} s "
        "a validation). Both measured as the training loop runs them (their own loaders and "
        f"workers, precision auto), interleaved in {rounds} rounds of {chunk} steps and a "
        "validation each (medians), so a change in the machine's speed hits both. The VarNet for about that "
        "time, whatever the machine's speed later: `.venv/bin/mri-recon-train "
        "experiment=varnet_multicoil trainer.max_time=null "
        f"trainer.max_epochs={max(1, round(times['varnet epochs']))}`.",
        "",
    ]


def run(root: Path = PROJECT_DIR / "data" / "demo", steps: int = 5) -> str:
    """The docs/benchmarks.md section (markdown); ``root``: the demo data (equal-time steps)."""
    fp32, auto = Runtime.create("cpu", "32"), Runtime.create("cpu", "auto")
    memory = release_training_memory_mb(auto)
    torch.manual_seed(0)
    batch = synthetic_batch(DEMO)
    rows = [("fastmri.models.VarNet, fp32", fastmri_step_ms(FastmriVarNet(**EQUAL), batch, steps))]
    equal = {**EQUAL, "norm": "instance", "crop_readout": False}
    rows.append(("ours, same settings, fp32", our_step_ms(VarNet(**equal), batch, fp32, steps)))
    rows.append(
        (
            f"ours, same settings, {auto.describe()}",
            our_step_ms(VarNet(**equal), batch, auto, steps),
        )
    )
    default = configured()
    rows.append(("ours as configured, fp32", our_step_ms(VarNet(**default), batch, fp32, steps)))
    rows.append(
        ("ours as configured, precision auto", our_step_ms(VarNet(**default), batch, auto, steps))
    )
    compiled = VarNet(**default)
    compiled.compile_parts()  # what trainer.compile=true does
    rows.append(
        (
            "ours as configured, precision auto, torch.compile",
            our_step_ms(compiled, batch, auto, steps),
        )
    )
    lines = [
        "## VarNet (ours vs fastmri.models.VarNet)",
        "",
        f"One training step (forward, SSIM loss, backward, clip, Adam) on one multi-coil demo slice "
        f"(8 coils, 256x144 k-space, 128x128 target), median of {steps} after 2 warm-up steps; "
        'fastMRI\'s and "same settings": 4 cascades, chans 12, sensitivity chans 8, instance '
        'norm and the full readout, fastMRI\'s network layer for layer. "As configured": '
        f"`experiment=varnet_multicoil` ({settings(default)}).",
        "",
        "| network | ms per step | vs fastmri |",
        "|---|---|---|",
    ]
    reference = rows[0][1]
    lines += [f"| {name} | {ms:.0f} | {reference / ms:.2f}x |" for name, ms in rows]
    lines += ["", "Inference seconds per slice (ours: precision auto; fastmri's: fp32):", ""]
    lines += [
        "| size | ours as configured | ours, `crop_readout=true` | fastmri.models.VarNet |",
        "|---|---|---|---|",
    ]
    for label, size in (("demo, 8 coils, 256x144", DEMO), ("release, 15 coils, 640x368", RELEASE)):
        ours = seconds_per_slice(VarNet(**default), size, auto)
        cropped = seconds_per_slice(VarNet(**{**default, "crop_readout": True}), size, auto)
        theirs = fastmri_seconds_per_slice(FastmriVarNet(**EQUAL), size)
        lines.append(f"| {label} | {ours:.3f} | {cropped:.3f} | {theirs:.3f} |")
    lines += [
        "",
        f"Memory: one release-size training slice (15 coils, 640x368, the network as configured, "
        f"precision auto) adds {memory:.0f} MB to the process's peak resident memory on the CPU.",
        "",
        *equal_time_lines(root),
    ]
    return "\n".join(lines)


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / "data" / "demo")
    parser.add_argument(
        "--equal-time", action="store_true", help="only the VarNet's steps in the U-Net's time"
    )
    args = parser.parse_args()
    print("\n".join(equal_time_lines(args.root)) if args.equal_time else run(args.root))


if __name__ == "__main__":
    main()
