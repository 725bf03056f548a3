"""`mri-recon-train`: train the U-Net on zero-filled -> fully sampled slices.

    mri-recon-train                                   # demo data, GroupNorm U-Net, Adam
    mri-recon-train optimizer.lr=3e-4 model.chans=64 mask=random_8x data.root=/data/knee
    mri-recon-train -m optimizer.lr=1e-3,3e-4         # a Hydra sweep
    mri-recon-train hydra.run.dir=runs/train/X trainer.resume=true   # continue run X

The run directory holds .hydra/ (resolved config), TensorBoard events, checkpoints/last.pt and
best.pt (by validation SSIM), train.log and metrics.json (final validation metrics).
"""

import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mri_recon import distributed
from mri_recon.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from mri_recon.config import CONFIG_DIR, PROJECT_DIR, check_overrides, check_value
from mri_recon.data.loaders import build_dataset, build_loader, build_mask_func
from mri_recon.errors import UserError, report_user_errors
from mri_recon.files import atomic_path
from mri_recon.metrics import METRICS, summarize, volume_metrics
from mri_recon.models.unet import NORMS, Unet, count_parameters, group_count
from mri_recon.reconstruct import VolumeCollector, autocast_context, predict, unnormalize

log = logging.getLogger(__name__)

# Command-line overrides that still apply when a run is resumed from its saved config.
RESUMABLE_OVERRIDES = ("trainer.", "data.root", "data.num_workers", "data.cache_dir")


def select_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; any other name is used as given."""
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"trainer.device={name}: CUDA is not available on this machine")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: ``auto`` means on CUDA only."""
    if precision not in ("auto", "32", "bf16"):
        raise UserError(f"trainer.precision: expected auto, 32 or bf16, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def check_config(cfg: DictConfig) -> None:
    """Reject values that cannot work, before any work starts."""
    rules = [
        ("optimizer.lr", False, lambda v: v > 0, "a positive number"),
        ("trainer.max_epochs", True, lambda v: v >= 1, "an integer >= 1"),
        ("trainer.max_bad_steps", True, lambda v: v >= 1, "an integer >= 1"),
        ("data.batch_size", True, lambda v: v >= 1, "an integer >= 1"),
        ("data.num_workers", True, lambda v: v >= 0, "an integer >= 0"),
        ("model.chans", True, lambda v: v >= 1, "an integer >= 1"),
        ("model.num_pool_layers", True, lambda v: v >= 0, "an integer >= 0"),
        ("model.groups", True, lambda v: v >= 1, "an integer >= 1"),
        ("model.drop_prob", False, lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    ]
    for key, integer, valid, expected in rules:
        check_value(cfg, key, integer, valid, expected)
    if cfg.trainer.gradient_clip_val is not None:
        check_value(
            cfg, "trainer.gradient_clip_val", False, lambda v: v > 0, "a positive number or null"
        )
    if cfg.model.norm not in NORMS:
        raise UserError(f"model.norm: expected one of {list(NORMS)}, got {cfg.model.norm!r}")
    if cfg.model.norm == "group":
        try:
            group_count(cfg.model.chans, cfg.model.groups)
        except ValueError as error:
            raise UserError(
                f"{error}: choose model.groups dividing model.chans={cfg.model.chans}"
            ) from error
    if cfg.data.challenge not in ("singlecoil", "multicoil"):
        raise UserError(
            f"data.challenge: expected singlecoil or multicoil, got {cfg.data.challenge!r}"
        )


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and masks, so a resumed run replays them exactly."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_resume(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, dict | None]:
    """The config to train with and the checkpoint to continue from (None for a new run).

    ``trainer.resume=true`` continues ``<run dir>/checkpoints/last.pt``; a path continues that
    checkpoint (or that run directory's last.pt). The saved run's config is used, with only
    ``trainer.*`` and data location overrides from the command line applied on top.
    """
    resume = cfg.trainer.resume
    if resume is False or resume is None:
        return cfg, None
    path = run_dir / "checkpoints" / "last.pt" if resume is True else Path(str(resume))
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(
            f"trainer.resume: no checkpoint at {path} (to continue a run, pass "
            "hydra.run.dir=<that run's directory> trainer.resume=true)"
        )
    state = load_checkpoint(path)
    saved = OmegaConf.create(state["config"])
    overrides = [
        item for item in HydraConfig.get().overrides.task if item.startswith(RESUMABLE_OVERRIDES)
    ]
    # Defaults first, so checkpoints from older versions get the keys added since.
    defaults = OmegaConf.create(OmegaConf.to_container(cfg))
    merged = OmegaConf.merge(defaults, saved, OmegaConf.from_dotlist(overrides))
    # Settings of this invocation, not of the run: where to stop and what to resume.
    merged.trainer.resume = resume
    merged.trainer.stop_after_epoch = cfg.trainer.stop_after_epoch
    return merged, state


class NullWriter:
    """Stands in for SummaryWriter on ranks other than 0, which write nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class TrainingDiverged(UserError):
    """Raised after too many consecutive NaN/Inf steps: a result of the settings, not a crash."""


class TrainingInterrupted(Exception):
    """Raised after the checkpoint that follows a SIGTERM/SIGINT has been written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Signals received while training, appended by the handler and read after each step.
stop_signal: list[int] = []
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def request_stop(signum: int, frame: Any) -> None:
    """Signal handler: finish the current step, checkpoint, then stop."""
    if stop_signal:  # a second Ctrl-C stops at once
        raise KeyboardInterrupt
    stop_signal.append(signum)
    log.warning("%s received: stopping after this step", signal.Signals(signum).name)


def skip_bad_step(progress: dict[str, Any], cfg: DictConfig, loss: float) -> None:
    """Count a NaN/Inf step (its update is skipped); stop after too many in a row."""
    progress["bad_steps"] = progress.get("bad_steps", 0) + 1
    log.warning(
        "skipped step %d: loss %s or its gradients are not finite (%d in a row)",
        progress["global_step"] + 1,
        loss,
        progress["bad_steps"],
    )
    if progress["bad_steps"] >= cfg.trainer.max_bad_steps:
        raise TrainingDiverged(
            f"training diverged: {progress['bad_steps']} consecutive steps with NaN/Inf loss or "
            f"gradients at step {progress['global_step'] + 1}; the last checkpoint is untouched. "
            "Lower optimizer.lr or set trainer.gradient_clip_val"
        )


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    bf16: bool,
    writer: SummaryWriter,
    progress: dict[str, Any],
    cfg: DictConfig,
    save_step_checkpoint: Callable[[], None],
) -> float:
    """One pass over the training data; returns the mean L1 loss of the batches it ran.

    A step whose loss or gradients are NaN/Inf is skipped (see ``skip_bad_step``). After a
    SIGTERM/SIGINT the current step finishes, last.pt is written and TrainingInterrupted raised.
    """
    model.train()
    losses, seen, window_start = [], 0, time.perf_counter()
    skip = progress["batches_done"]
    bar = tqdm(loader, desc=f"epoch {progress['epoch'] + 1}", leave=False, unit="batch")
    for batch_index, batch in enumerate(bar):
        if batch_index < skip:  # replaying a partly finished epoch after a step checkpoint
            continue
        images = batch.image.to(device, non_blocking=True)
        targets = batch.target.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, bf16):
            loss = F.l1_loss(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = cfg.trainer.gradient_clip_val or math.inf
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip)
        progress["batches_done"] = batch_index + 1
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            skip_bad_step(progress, cfg, loss.item())
            continue
        progress["bad_steps"] = 0
        optimizer.step()
        scheduler.step()

        progress["global_step"] += 1
        losses.append(loss.item())
        seen += images.shape[0]
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        step = progress["global_step"]
        if step % cfg.trainer.log_every_n_steps == 0:
            elapsed = time.perf_counter() - window_start
            writer.add_scalar("train/loss", losses[-1], step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            writer.add_scalar("train/slices_per_sec", seen / elapsed, step)
            seen, window_start = 0, time.perf_counter()
        every = cfg.trainer.checkpoint_every_n_steps
        stop = distributed.any_rank(bool(stop_signal), device)
        if (every and step % every == 0) or stop:
            save_step_checkpoint()
        if stop:
            raise TrainingInterrupted(stop_signal[0] if stop_signal else signal.SIGTERM)
    return float(np.mean(losses)) if losses else math.nan


def validate(
    model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, bf16: bool
) -> dict[str, Any]:
    """Validation L1 loss and fastMRI metrics (mean/std over volumes) of the model.

    Under torchrun each rank validates its own whole volumes; the per-volume metrics are gathered
    and summarized in file-name order, so the numbers equal a single-process run's.
    """
    model.eval()
    predictions, targets = VolumeCollector(), VolumeCollector()
    loss_sum, count = 0.0, 0
    for batch in tqdm(
        loader, desc="validation", leave=False, unit="batch", disable=not distributed.is_main()
    ):
        output = predict(model, batch.image, device, bf16)
        loss_sum += F.l1_loss(output, batch.target.to(device)).item() * len(batch.fname)
        count += len(batch.fname)
        predictions.add(unnormalize(output, batch), batch.fname, batch.slice_num)
        targets.add(unnormalize(batch.target, batch), batch.fname, batch.slice_num)
    truth = targets.volumes()
    mine = {name: volume_metrics(truth[name], pred) for name, pred in predictions.volumes().items()}
    per_volume: dict[str, dict[str, float]] = {}
    total_loss, total_count = 0.0, 0
    for part, part_loss, part_count in distributed.gather((mine, loss_sum, count)):
        per_volume.update(part)
        total_loss, total_count = total_loss + part_loss, total_count + part_count
    summary = summarize([per_volume[name] for name in sorted(per_volume)])
    return {"loss": total_loss / total_count, **summary}


def log_panels(
    writer: SummaryWriter,
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    indices: list[int],
    device: torch.device,
    bf16: bool,
    step: int,
) -> None:
    """TensorBoard panels target | zero-filled | U-Net | |error| for fixed validation slices."""
    for index in indices:
        sample = dataset[index]
        batch = torch.utils.data.default_collate([sample])
        output = unnormalize(predict(model, batch.image, device, bf16), batch)[0]
        target = unnormalize(batch.target, batch)[0]
        zero_filled = unnormalize(batch.image, batch)[0]
        panel = np.concatenate([target, zero_filled, output, np.abs(target - output)], axis=1)
        scale = sample.max_value or float(target.max())
        writer.add_image(
            f"val_images/{sample.fname}_slice{sample.slice_num}",
            np.clip(panel / scale, 0, 1),
            step,
            dataformats="HW",
        )


def fit(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train, validate each epoch, checkpoint; return the final validation metrics."""
    cfg, resumed = resolve_resume(cfg, run_dir)
    check_config(cfg)
    seed_everything(cfg.seed)
    device = distributed.device_for(select_device(cfg.trainer.device))
    distributed.setup(device.type)
    bf16 = uses_bf16(str(cfg.trainer.precision), device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True

    mask_func = build_mask_func(cfg.mask)
    train_set = build_dataset(cfg.data, cfg.data.train_split, mask_func, fixed_masks=False)
    val_set = build_dataset(
        cfg.data, cfg.data.val_split, build_mask_func(cfg.mask), fixed_masks=True
    )
    generator = torch.Generator()
    pin = device.type == "cuda"
    # Under torchrun: a seeded shuffle sharded per rank; validation sharded by whole volumes.
    sampler = None
    if distributed.world_size() > 1:
        sampler = DistributedSampler(train_set, shuffle=True, seed=cfg.seed)
    train_loader = build_loader(
        train_set,
        cfg.data,
        shuffle=sampler is None,
        generator=generator,
        pin_memory=pin,
        sampler=sampler,
    )
    val_shard = Subset(val_set, distributed.my_volume_indices([p.name for p, _ in val_set.slices]))
    val_loader = build_loader(
        val_shard,
        cfg.data,
        shuffle=False,
        generator=torch.Generator().manual_seed(0),
        pin_memory=pin,
    )

    model: Unet = hydra.utils.instantiate(cfg.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=model.parameters())
    steps_per_epoch = len(train_loader)
    scheduler = hydra.utils.instantiate(cfg.scheduler)(
        optimizer=optimizer,
        total_steps=cfg.trainer.max_epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
    )
    progress = {"epoch": 0, "batches_done": 0, "global_step": 0, "best_ssim": -math.inf}
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        progress = dict(resumed["progress"])
        restore_rng_states(resumed["rng"])
        log.info("resuming at epoch %d, step %d", progress["epoch"] + 1, progress["global_step"])

    checkpoints = run_dir / "checkpoints"
    config_container = OmegaConf.to_container(cfg, resolve=True)

    def save(name: str) -> None:
        if not distributed.is_main():
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": dict(progress),
            "rng": rng_states(),
            "config": config_container,
        }
        save_checkpoint(state, checkpoints / name)

    num_params = count_parameters(model)
    log.info("run directory: %s", run_dir)
    log.info(
        "U-Net (%s norm): %s parameters; device %s%s",
        cfg.model.norm,
        f"{num_params:,}",
        device,
        " with bf16 autocast" if bf16 else "",
    )
    log.info("TensorBoard: tensorboard --logdir %s", run_dir.parent)
    writer = (
        # On resume, drop the events logged after the checkpoint (they are logged again).
        SummaryWriter(
            log_dir=str(run_dir), purge_step=progress["global_step"] + 1 if resumed else None
        )
        if distributed.is_main()
        else NullWriter()
    )
    train_model = model
    if distributed.world_size() > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.trainer.compile:
        train_model = torch.compile(train_model)
    panel_indices = np.linspace(0, len(val_set) - 1, cfg.trainer.num_val_images).astype(int)
    metrics: dict[str, Any] = {}
    last_epoch = cfg.trainer.max_epochs
    if cfg.trainer.stop_after_epoch is not None:
        last_epoch = min(last_epoch, cfg.trainer.stop_after_epoch)

    epochs = tqdm(
        range(progress["epoch"], last_epoch),
        desc="training",
        unit="epoch",
        initial=progress["epoch"],
        total=cfg.trainer.max_epochs,
    )
    handlers = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
    try:
        for epoch in epochs:
            progress["epoch"] = epoch
            start = time.perf_counter()
            generator.manual_seed(epoch_seed(cfg.seed, epoch))
            if sampler is not None:
                sampler.set_epoch(epoch)
            # The mask stream of the main process (num_workers=0); workers reseed their own.
            train_set.transform.reseed([cfg.seed, epoch, distributed.rank()])
            train_loss = train_one_epoch(
                train_model,
                train_loader,
                optimizer,
                scheduler,
                device,
                bf16,
                writer,
                progress,
                cfg,
                lambda: save("last.pt"),
            )
            metrics = validate(model, val_loader, device, bf16)
            # Per-epoch scalars at the global step, so they line up with train/* in TensorBoard.
            step = progress["global_step"]
            for name in ("loss", *METRICS):
                value = metrics[name] if name == "loss" else metrics[name]["mean"]
                writer.add_scalar(f"val/{name}", value, step)
            if distributed.is_main():
                log_panels(writer, model, val_set, panel_indices.tolist(), device, bf16, step)
            seconds = time.perf_counter() - start
            writer.add_scalar("time/epoch_seconds", seconds, step)  # training + validation
            writer.flush()

            progress["epoch"], progress["batches_done"] = epoch + 1, 0
            improved = metrics["SSIM"]["mean"] > progress["best_ssim"]
            if improved:
                progress["best_ssim"] = metrics["SSIM"]["mean"]
                progress["best_epoch"] = epoch + 1
                save("best.pt")
            save("last.pt")
            log.info(
                "epoch %d/%d  train loss %.4f  val loss %.4f  SSIM %.4f  PSNR %.2f  NMSE %.4f  %.0fs%s",
                epoch + 1,
                cfg.trainer.max_epochs,
                train_loss,
                metrics["loss"],
                metrics["SSIM"]["mean"],
                metrics["PSNR"]["mean"],
                metrics["NMSE"]["mean"],
                seconds,
                "  (best)" if improved else "",
            )
            if distributed.any_rank(bool(stop_signal), device):  # received during validation
                raise TrainingInterrupted(stop_signal[0] if stop_signal else signal.SIGTERM)

    except TrainingInterrupted:
        log.warning(
            "stopped at epoch %d, step %d; checkpoint written. Resume with: "
            "mri-recon-train hydra.run.dir=%s trainer.resume=true",
            progress["epoch"] + 1,
            progress["global_step"],
            run_dir,
        )
        writer.close()
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        stop_signal.clear()
        distributed.cleanup()

    if progress["epoch"] < cfg.trainer.max_epochs:
        log.info(
            "stopped after epoch %d; continue with: mri-recon-train hydra.run.dir=%s "
            "trainer.resume=true",
            progress["epoch"],
            run_dir,
        )
    elif metrics and distributed.is_main():
        hparams = {
            "lr": cfg.optimizer.lr,
            "optimizer": cfg.optimizer._target_.split(".")[-1],
            "norm": cfg.model.norm,
            "chans": cfg.model.chans,
            "batch_size": cfg.data.batch_size,
            "epochs": cfg.trainer.max_epochs,
        }
        result = {
            "epoch": progress["epoch"],
            "val": metrics,
            "best": {"epoch": progress.get("best_epoch"), "SSIM": progress["best_ssim"]},
            "hparams": hparams,
        }
        with atomic_path(run_dir / "metrics.json") as temporary:
            temporary.write_text(json.dumps(result, indent=2))
        writer.add_hparams(
            hparams, {f"hparam/{m}": metrics[m]["mean"] for m in METRICS}, run_name="."
        )
        log.info("done: metrics in %s", run_dir / "metrics.json")
    writer.close()
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point of `mri-recon-train`; returns the final validation SSIM (for sweeps)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = fit(cfg, run_dir)
    except TrainingInterrupted as interrupt:
        sys.exit(128 + interrupt.signum)
    except TrainingDiverged as error:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # In a sweep a diverged setting is a result: record it and go on with the next job.
        log.error("%s", error)
        with atomic_path(run_dir / "metrics.json") as temporary:
            temporary.write_text(json.dumps({"diverged": str(error)}, indent=2))
        return None
    return metrics["SSIM"]["mean"] if metrics else None


def cli() -> None:
    """The `mri-recon-train` console script: checks the overrides, then runs the Hydra app."""
    sys.argv += distributed.hydra_overrides(sys.argv[1:], "train", str(PROJECT_DIR))
    check_overrides("train", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
