"""What a training run reports: log lines, TensorBoard scalars and panels, metrics.json.

Only rank 0 writes; other ranks get a ``Reporter`` whose writer does nothing.
"""

import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from mri_recon import distributed
from mri_recon.files import atomic_path
from mri_recon.metrics import METRICS
from mri_recon.models.unet import count_parameters
from mri_recon.runtime import Runtime
from mri_recon.training.budget import slurm_time
from mri_recon.training.state import TrainState
from mri_recon.training.validation import ValidationResult

log = logging.getLogger(__name__)


class NullWriter:
    """Stands in for SummaryWriter on ranks other than 0, which write nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class Reporter:
    """The run directory's TensorBoard events, log lines and metrics.json."""

    def __init__(self, run_dir: Path, cfg: DictConfig, state: TrainState) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        # On resume, drop the events logged after the checkpoint (they are logged again).
        purge_step = state.global_step + 1 if state.resumed else None
        self.writer: SummaryWriter | NullWriter = (
            SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
            if distributed.is_main()
            else NullWriter()
        )
        self.window_start, self.window_slices = time.perf_counter(), 0

    def start(self, state: TrainState, runtime: Runtime) -> None:
        """Log where the run writes and what it trains."""
        log.info("run directory: %s", self.run_dir)
        log.info(
            "%s (%s norm): %s parameters; device %s",
            type(state.model).__name__,
            self.cfg.model.norm,
            f"{count_parameters(state.model):,}",
            runtime.describe(),
        )
        log.info("TensorBoard: tensorboard --logdir %s", self.run_dir.parent)

    def step(self, state: TrainState, loss: float, batch_size: int) -> None:
        """train/loss, train/lr and train/slices_per_sec every ``log_every_n_steps`` steps."""
        self.window_slices += batch_size
        step = state.global_step
        if step % self.cfg.trainer.log_every_n_steps:
            return
        elapsed = time.perf_counter() - self.window_start
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", state.optimizer.param_groups[0]["lr"], step)
        self.writer.add_scalar("train/slices_per_sec", self.window_slices / elapsed, step)
        self.window_start, self.window_slices = time.perf_counter(), 0

    def restart_window(self) -> None:
        """Start timing slices/s afresh (at each epoch's start)."""
        self.window_start, self.window_slices = time.perf_counter(), 0

    def epoch_events(
        self,
        state: TrainState,
        train_loss: float,
        result: ValidationResult | None,
        seconds: float,
    ) -> None:
        """The epoch's TensorBoard report, after ``state`` counts it: validation scalars and
        panels (none if ``result`` is None: validation skipped), the epoch's mean training loss
        and its seconds (training + validation) at the global step, so they line up with
        train/*, flushed."""
        step = state.global_step
        if result is not None:
            self.validation_events(step, result)
        self.writer.add_scalar("train/epoch_loss", train_loss, step)
        self.writer.add_scalar("time/epoch_seconds", seconds, step)
        self.writer.flush()

    def validation_events(self, step: int, result: ValidationResult) -> None:
        """val/* scalars and one image panel per chosen slice."""
        metrics = result.metrics
        for name in ("loss", *METRICS):
            value = metrics[name] if name == "loss" else metrics[name]["mean"]
            self.writer.add_scalar(f"val/{name}", value, step)
        for panel in result.panels:  # target | zero-filled | model | |error|
            images = [panel.target, panel.zero_filled, panel.output]
            strip = np.concatenate([*images, np.abs(panel.target - panel.output)], axis=1)
            self.writer.add_image(
                f"val_images/{panel.fname}_slice{panel.slice_num}",
                np.clip(strip / panel.scale, 0, 1),
                step,
                dataformats="HW",
            )

    def epoch_line(
        self,
        state: TrainState,
        train_loss: float,
        result: ValidationResult | None,
        seconds: float,
        planned: int | None,
    ) -> None:
        """The epoch's log line (epoch N of ``planned``); None: its validation was skipped."""
        if result is None:
            log.info(
                "epoch %d/%s  train loss %.4f  validation skipped: behind the budget's plan, "
                "so that the run still reaches step %d  %.0fs",
                state.epoch,
                planned or "?",
                train_loss,
                state.horizon.total_steps,
                seconds,
            )
            return
        metrics = result.metrics
        log.info(
            "epoch %d/%s  train loss %.4f  val loss %.4f  SSIM %.4f  PSNR %.2f  NMSE %.4f  %.0fs%s",
            state.epoch,
            planned or "?",
            train_loss,
            metrics["loss"],
            metrics["SSIM"]["mean"],
            metrics["PSNR"]["mean"],
            metrics["NMSE"]["mean"],
            seconds,
            "  (best)" if state.best_epoch == state.epoch else "",
        )

    def resume_hint(self, state: TrainState, signum: signal.Signals | None) -> None:
        """The line that says how to continue a run that stopped before its last epoch."""
        where = (
            f"in epoch {state.epoch + 1} at step {state.global_step}"
            if state.batches_done
            else f"after epoch {state.epoch} (step {state.global_step})"
        )
        log.log(
            logging.WARNING if signum else logging.INFO,
            "stopped %s%s; checkpoint written. Resume with: mri-recon-train hydra.run.dir=%s "
            "trainer.resume=true",
            where,
            f" by {signum.name}" if signum else "",
            self.run_dir,
        )

    def write_metrics(
        self, state: TrainState, metrics: dict[str, Any], diverged: str | None = None
    ) -> None:
        """metrics.json (rank 0), the run's one record of how it ended: the last validation
        metrics (``val``), the best epoch and the main settings, and for a run that diverged
        the reason (``diverged``); with the metrics, the hparams table in TensorBoard."""
        if not distributed.is_main():
            return
        cfg = self.cfg
        hparams = {
            "lr": cfg.optimizer.lr,
            "optimizer": cfg.optimizer._target_.split(".")[-1],
            "norm": cfg.model.norm,
            "chans": cfg.model.chans,
            "batch_size": cfg.data.batch_size,
            "epochs": state.epoch,
            "max_time": cfg.trainer.max_time or "none",
        }
        result = {
            "epoch": state.epoch,
            "val": metrics,
            "best": {
                "epoch": state.best_epoch,
                "SSIM": state.best_ssim if state.best_epoch is not None else None,
            },
            "hparams": hparams,
        }
        if diverged is not None:
            result["diverged"] = diverged
        with atomic_path(self.run_dir / "metrics.json") as temporary:
            temporary.write_text(json.dumps(result, indent=2))
        if metrics:
            scores = {f"hparam/{m}": metrics[m]["mean"] for m in METRICS}
            self.writer.add_hparams(hparams, scores, run_name=".")
        log.info("metrics in %s", self.run_dir / "metrics.json")
        if diverged is None:  # for equal-time comparisons (README)
            took = slurm_time(state.seconds)
            log.info(
                "training took %s, validations included (trainer.max_time=%s gives another "
                "run the same time)",
                took,
                took,
            )

    def close(self) -> None:
        self.writer.close()
