"""Everything a training run changes as it goes; its ``state_dict()`` is the checkpoint."""

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mri_recon.checkpoints import build_model, load_weights
from mri_recon.losses import L1Loss
from mri_recon.runtime import Runtime
from mri_recon.schedulers import Horizon
from mri_recon.training.checkpointing import restore_rng_states, rng_states

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Model, optimizer, scheduler, loss and the counters of one run.

    ``epoch`` counts finished epochs, ``batches_done`` the batches of the current epoch already
    consumed (a mid-epoch checkpoint replays the epoch's loader and skips those), ``global_step``
    the optimizer steps taken, ``bad_steps`` the current run of NaN/Inf steps, ``seconds`` the
    training loop's wall clock so far (all invocations), ``validation_seconds`` and
    ``checkpoint_seconds`` the last validation's and checkpoint write's. ``horizon`` is where the schedule ends
    (for a budget run, None until its plan fixed it).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    config: dict[str, Any]
    loss: nn.Module = field(
        default_factory=L1Loss
    )  # the `loss` group's; called (output, target, batch)
    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    bad_steps: int = 0
    best_ssim: float = -math.inf
    best_epoch: int | None = None
    seconds: float = 0.0
    validation_seconds: float = 0.0  # the last validation's (a budget run keeps that much back)
    checkpoint_seconds: float = 0.0  # the last checkpoint write's (likewise, twice)
    horizon: Horizon = field(default_factory=lambda: Horizon(None))
    # What the training step calls: the model, or its DDP/compiled wrapper (not saved).
    module: nn.Module | None = field(default=None, repr=False)
    resumed: bool = False

    def __post_init__(self) -> None:
        if self.module is None:
            self.module = self.model

    @classmethod
    def create(cls, cfg: DictConfig, runtime: Runtime, steps_per_epoch: int) -> "TrainState":
        """A fresh model (on the runtime's device), optimizer and schedule from the config."""
        model = runtime.place(build_model(cfg.model, "model"))
        optimizer = hydra.utils.instantiate(cfg.optimizer)(params=model.parameters())
        budget = cfg.trainer.max_time is not None
        horizon = Horizon(None if budget else cfg.trainer.max_epochs * steps_per_epoch)
        scheduler = hydra.utils.instantiate(cfg.scheduler)(
            optimizer=optimizer, horizon=horizon, steps_per_epoch=steps_per_epoch
        )
        config = OmegaConf.to_container(cfg, resolve=True)
        loss = hydra.utils.instantiate(cfg.loss)
        return cls(model, optimizer, scheduler, config, loss, horizon=horizon)

    def progress(self) -> dict[str, Any]:
        """The counters, as stored in a checkpoint's ``progress``."""
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "global_step": self.global_step,
            "bad_steps": self.bad_steps,
            "best_ssim": self.best_ssim,
            "best_epoch": self.best_epoch,
            # A budget run's decision (an epoch run's horizon comes from its config).
            "budget_steps": self.horizon.total_steps if self.budgeted else None,
            "decay_start": self.horizon.decay_start,
        }

    @property
    def budgeted(self) -> bool:
        """Whether the run's length is set by ``trainer.max_time``."""
        return self.config.get("trainer", {}).get("max_time") is not None

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: weights, optimizer and scheduler states, counters, RNG states, config."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": self.progress(),
            # Kept apart: progress is equal in equal runs, the wall clock is not.
            "seconds": self.seconds,
            "validation_seconds": self.validation_seconds,
            "checkpoint_seconds": self.checkpoint_seconds,
            "rng": rng_states(),
            "config": self.config,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint (``resolve_resume``'s, which adds its ``path``): weights,
        optimizer, schedule, counters and RNG states."""
        load_weights(self.model, checkpoint["model"], checkpoint["path"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        progress = checkpoint["progress"]
        self.epoch, self.batches_done = progress["epoch"], progress["batches_done"]
        self.global_step = progress["global_step"]
        self.bad_steps = progress.get("bad_steps", 0)
        self.best_ssim = progress["best_ssim"]
        self.best_epoch = progress.get("best_epoch")
        self.seconds = checkpoint.get("seconds", 0.0)
        self.validation_seconds = checkpoint.get("validation_seconds", 0.0)
        self.checkpoint_seconds = checkpoint.get("checkpoint_seconds", 0.0)
        if self.budgeted and progress.get("budget_steps") is not None:
            self.horizon.total_steps = progress["budget_steps"]
            self.horizon.decay_start = progress["decay_start"]
        restore_rng_states(checkpoint["rng"])
        self.resumed = True
        log.info("resuming at epoch %d, step %d", self.epoch + 1, self.global_step)
