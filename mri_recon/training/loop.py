"""The training loop: epochs of optimizer steps, validation after each, checkpoints.

    result = fit(cfg, run_dir)   # cfg: the composed `train` config; run_dir: where it writes

Read top to bottom: ``fit`` sets up the process, ``Training`` builds the run and ``run`` goes
through the epochs; ``train_epoch`` is the inner loop around ``training.step.train_step``.
"""

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from mri_recon import distributed
from mri_recon.data.loaders import TrainingData, worker_count
from mri_recon.errors import UserError
from mri_recon.runtime import Runtime, seed_everything
from mri_recon.training import budget
from mri_recon.training.checkpointing import Checkpoints, resolve_resume
from mri_recon.training.reporting import Reporter
from mri_recon.training.run_lock import run_lock
from mri_recon.training.settings import check_config
from mri_recon.training.state import TrainState
from mri_recon.training.step import (
    StepResult,
    check_deferrable,
    gradients,
    queue_update,
    settle,
    train_step,
)
from mri_recon.training.stopping import StopRequest
from mri_recon.training.validation import panel_slices, validate

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """Raised after too many consecutive NaN/Inf steps: a result of the settings, not a crash."""


class TrainingResult(NamedTuple):
    """The last validation metrics ({} if no epoch finished) and the signal that stopped the
    run early (None if it ran to the end or to ``trainer.stop_after_epoch``)."""

    metrics: dict[str, Any]
    stopped_by: signal.Signals | None


def fit(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> TrainingResult:
    """Train as ``cfg`` says, writing into ``run_dir``.

    ``overrides`` are the command line's (``key=value``): when resuming, the saved config is
    used and only the ``trainer.*`` and data location ones apply on top of it. Only one process
    trains in ``run_dir`` at a time (``run_lock``).
    """
    with run_lock(run_dir):
        # The config: the saved run's when resuming; a value that cannot work stops us here.
        cfg, checkpoint = resolve_resume(cfg, run_dir, overrides or [])
        check_config(cfg)
        # The worker count the run used, saved as a number (the masks do not depend on it:
        # each slice's is seeded by itself, so a resumed run may use another count).
        cfg.data.num_workers = worker_count(cfg.data.num_workers)
        # Seeds, then device and precision; under torchrun, the process group.
        seed_everything(cfg.seed)
        trainer = cfg.trainer
        runtime = Runtime.create(
            trainer.device, trainer.precision, trainer.channels_last, trainer.deterministic
        )
        distributed.setup(runtime.device.type)
        try:
            return Training(cfg, run_dir, runtime, checkpoint).run()
        finally:
            distributed.cleanup()


class Training:
    """One run: its data, state, reporter, checkpoints and stop requests."""

    def __init__(
        self, cfg: DictConfig, run_dir: Path, runtime: Runtime, checkpoint: dict | None
    ) -> None:
        self.cfg, self.trainer, self.runtime = cfg, cfg.trainer, runtime
        # Data: shuffled, randomly masked training slices; validation slices with fixed masks;
        # zero-filled images made in the workers, or on the device (data.transform_on).
        self.data = TrainingData(cfg, runtime.device)
        # Model, optimizer, schedule; a checkpoint restores them, the counters and RNG states.
        self.state = TrainState.create(cfg, runtime, steps_per_epoch=len(self.data.train_loader))
        if checkpoint is not None:
            self.state.load_state_dict(checkpoint)
        if self.trainer.defer_sync:
            check_deferrable(self.state.optimizer)
        self.state.module = runtime.training_module(self.state.model, self.trainer.compile)
        # Where results go: log, TensorBoard, metrics.json (rank 0), checkpoints/.
        self.reporter = Reporter(run_dir, cfg, self.state)
        self.checkpoints = Checkpoints(run_dir / "checkpoints")
        self.panel_keys = panel_slices(self.data.val_set, self.trainer.num_val_images)
        self.stop = StopRequest(self.trainer.stop_check_every_n_steps, runtime.device)
        self.budget_seconds = budget.parse_max_time(self.trainer.max_time)  # None: no budget
        # The training loop's wall clock starts here: (when, state.seconds by then), and the
        # current epoch's (a budget's pace).
        self.clock = (time.perf_counter(), self.state.seconds)
        self.epoch_clock = budget.EpochClock()
        self.epochs_run = 0  # by this process (its first holds the one-offs)

    def run(self) -> TrainingResult:
        """Epochs until the run's end (``max_epochs``, or the steps its budget fixed), or
        ``stop_after_epoch``, or a stop request."""
        state, metrics = self.state, {}
        self.reporter.start(state, self.runtime)
        epochs = tqdm(desc="training", unit="epoch", initial=state.epoch, total=self.planned())
        try:
            with self.stop:
                while self.epochs_left():
                    epoch, start = state.epoch, time.perf_counter()
                    self.data.start_epoch(epoch)
                    train_loss = self.train_epoch(epoch)
                    if train_loss is None:  # stopped mid-epoch, checkpoint written
                        break
                    seconds = time.perf_counter() - start
                    metrics = self.end_epoch(epoch, train_loss, seconds) or metrics
                    epochs.total = self.planned()
                    epochs.update()
                    if self.stop.agreed():  # a stop request that came during validation
                        break
            return self.finish(metrics)
        except TrainingDiverged as error:
            self.reporter.write_metrics(state, {}, diverged=str(error))
            raise
        finally:
            epochs.close()
            self.reporter.close()

    def epochs_left(self) -> bool:
        """Whether to start another epoch (not past ``stop_after_epoch`` nor the run's end)."""
        after = self.trainer.stop_after_epoch
        return not (after is not None and self.state.epoch >= after) and not self.complete()

    def complete(self) -> bool:
        """Whether the run has reached its end: its last epoch, or its budget's last step."""
        state, last_epoch = self.state, self.trainer.max_epochs
        total = state.horizon.total_steps
        if state.budgeted and total is not None and state.global_step >= total:
            return True
        return last_epoch is not None and state.epoch >= last_epoch

    def planned(self) -> int | None:
        """How many epochs the run has (None: a budget run before its plan)."""
        if not self.state.budgeted:
            return self.trainer.max_epochs
        total = self.state.horizon.total_steps
        return None if total is None else math.ceil(total / len(self.data.train_loader))

    def finish(self, metrics: dict[str, Any]) -> TrainingResult:
        """The one way a run ends: metrics.json once it is complete, else (a stop signal,
        ``stop_after_epoch``) the line that says how to resume."""
        state = self.state
        if self.complete() and self.stop.stopped is None:
            self.reporter.write_metrics(state, metrics)
        else:
            self.reporter.resume_hint(state, self.stop.stopped)
        return TrainingResult(metrics, self.stop.stopped)

    def train_epoch(self, epoch: int) -> float | None:
        """One pass over the training slices (in a budget run's last epoch, up to its last
        step); the mean loss of its steps (nan if none).

        After a stop request the step finishes, last.pt is written and None returned. With
        ``trainer.defer_sync`` each step is counted once the next one's gradients are queued
        (``training.step``); a step that ends the run or the epoch early leaves the next one's
        gradients unused, and that batch is replayed on resume.
        """
        state, losses = self.state, []
        self.reporter.restart_window()
        self.epoch_clock = budget.EpochClock(first_step_one_off=self.epochs_run == 0)
        self.epochs_run += 1
        bar = tqdm(self.data.train_loader, desc=f"epoch {epoch + 1}", leave=False, unit="batch")
        queued, outcome = None, None  # deferred: (step, batch index, batch size) not yet counted
        for index, batch in enumerate(bar):
            self.epoch_clock.batch_arrived()
            if index < state.batches_done:  # replaying a partly finished epoch after a resume
                continue
            size, clip = len(batch.fname), self.trainer.gradient_clip_val
            if not self.trainer.defer_sync:
                result = train_step(state, batch, self.runtime, clip)
                outcome = self.count_step(result, index, size, losses)
            else:
                pending = gradients(state, batch, self.runtime, clip)
                if queued is not None:
                    outcome = self.count_step(settle(state, queued[0]), *queued[1:], losses)
                if outcome is None:
                    queue_update(state, pending)
                    queued = (pending, index, size)
            if losses:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if outcome is not None:
                break
        else:
            if queued is not None:  # deferred: the epoch's last step
                outcome = self.count_step(settle(state, queued[0]), *queued[1:], losses)
        bar.close()
        if outcome == "stop":
            return None
        return float(np.mean(losses)) if losses else math.nan

    def count_step(
        self, result: StepResult, index: int, batch_size: int, losses: list[float]
    ) -> str | None:
        """Count a finished step (batch ``index`` of the epoch): counters, its loss in
        ``losses`` and TensorBoard, stop requests, periodic checkpoints, the budget. Returns
        "stop" (a stop request: last.pt written), "end" (a budget run's last step) or None."""
        state = self.state
        self.epoch_clock.step_ended()
        state.batches_done = index + 1
        if not result.applied:
            self.skip_bad_step(result.loss)
            return None
        state.bad_steps, state.global_step = 0, state.global_step + 1
        losses.append(result.loss)
        self.reporter.step(state, result.loss, batch_size)
        stop = self.stop.agreed(state.global_step)
        every = self.trainer.checkpoint_every_n_steps
        if stop or (every and state.global_step % every == 0):
            self.save("last.pt")
        if stop:
            return "stop"
        if self.behind_budget(state.global_step):
            self.end_budget_here()
        return "end" if self.complete() else None

    def behind_budget(self, step: int | None = None) -> bool:
        """Whether a budget run with a fixed plan has no time left for more steps: its loop's
        seconds plus one validation and two checkpoint writes (times ENDING_SLACK) reach the
        budget (its steps got slower than the epoch it measured).

        ``step``: under torchrun the ranks only compare every ``stop_check_every_n_steps``
        steps (False in between); None: compare now (at an epoch's end).
        """
        state = self.state
        total = state.horizon.total_steps
        if not state.budgeted or total is None or state.global_step >= total:
            return False
        if not self.stop.ranks_compare(step):
            return False
        ending = state.validation_seconds + 2 * state.checkpoint_seconds
        late = self.elapsed() + budget.ENDING_SLACK * ending >= self.budget_seconds
        return distributed.any_rank(late, self.runtime.device)

    def end_budget_here(self) -> None:
        """End a budget run that is behind its plan at this step (validated, checkpointed and
        reported as a run that reached its end), so that it still ends inside its budget."""
        state = self.state
        log.warning(
            "budget %s: %.0fs spent at step %d of the %d planned (steps got slower than the "
            "epoch it measured); the run ends at this step, inside its budget",
            self.trainer.max_time,
            self.elapsed(),
            state.global_step,
            state.horizon.total_steps,
        )
        state.horizon.total_steps = state.global_step

    def elapsed(self) -> float:
        """The training loop's seconds so far, earlier invocations included."""
        started, seconds_before = self.clock
        return seconds_before + time.perf_counter() - started

    def save(self, name: str) -> None:
        """Write the state as checkpoints/<name>, with the loop's seconds so far; timed."""
        start = time.perf_counter()
        self.state.seconds = self.elapsed()
        self.checkpoints.save(self.state.state_dict(), name)
        self.state.checkpoint_seconds = time.perf_counter() - start

    def skip_bad_step(self, loss: float) -> None:
        """Count a NaN/Inf step (its update was skipped); stop after too many in a row."""
        state = self.state
        state.bad_steps += 1
        log.warning(
            "skipped step %d: loss %s or its gradients are not finite (%d in a row)",
            state.global_step + 1,
            loss,
            state.bad_steps,
        )
        if state.bad_steps >= self.trainer.max_bad_steps:
            raise TrainingDiverged(
                f"training diverged: {state.bad_steps} consecutive steps with NaN/Inf loss or "
                f"gradients at step {state.global_step + 1}; the last checkpoint is untouched. "
                "Lower optimizer.lr or set trainer.gradient_clip_val"
            )

    def end_epoch(
        self, epoch: int, train_loss: float, train_seconds: float
    ) -> dict[str, Any] | None:
        """Validate (unless a budget run behind its plan skips it), count the epoch, write its
        TensorBoard events, write best.pt (if SSIM improved), fix a budget run's length (after
        a typical epoch, from the validation, the events and best.pt's write, all timed) or end
        one that is behind its plan, log the epoch, then write last.pt (the checkpoint a run
        resumes from never runs ahead of its epoch's events). Returns the validation metrics
        (None: skipped).

        ``train_seconds``: the epoch's training seconds in this process (the budget's pace comes
        from ``epoch_clock``).
        """
        state = self.state
        start = time.perf_counter()
        result = None
        if not self.skip_validation():
            result = validate(state, self.data.val_loader, self.runtime, self.panel_keys)
        state.epoch, state.batches_done = epoch + 1, 0
        seconds = train_seconds + time.perf_counter() - start
        self.reporter.epoch_events(state, train_loss, result, seconds)
        if result is not None:
            state.validation_seconds = time.perf_counter() - start  # with its report
            if result.metrics["SSIM"]["mean"] > state.best_ssim:
                state.best_ssim, state.best_epoch = result.metrics["SSIM"]["mean"], epoch + 1
                self.save("best.pt")
        if state.budgeted and state.horizon.total_steps is None:
            self.fix_budget(state.validation_seconds)
        elif result is not None and self.behind_budget():  # no time for a step and validation
            # (a skipped validation left time for the planned steps: never the run's last epoch)
            self.end_budget_here()
        self.reporter.epoch_line(state, train_loss, result, seconds, self.planned())
        self.save("last.pt")
        return None if result is None else result.metrics

    def skip_validation(self) -> bool:
        """Whether a budget run with a fixed plan, behind it at this epoch's pace, leaves out
        this epoch's validation so that it still reaches its planned step (``budget``); every
        rank does as any one decides. The run's last epoch is always validated."""
        state = self.state
        total = state.horizon.total_steps
        if not state.budgeted or total is None or state.global_step >= total:
            return False
        skip = budget.skip_validation(
            budget=budget.TimeBudget(self.budget_seconds, self.trainer.budget_margin),
            spent=self.elapsed(),
            pace=self.epoch_clock.pace(state.validation_seconds, state.checkpoint_seconds),
            steps_left=total - state.global_step,
            steps_per_epoch=len(self.data.train_loader),
        )
        return distributed.any_rank(skip, self.runtime.device)

    def fix_budget(self, validation_seconds: float) -> None:
        """Set the run's total steps from the pace measured in this epoch (``budget``), once
        it is a typical epoch (``budget.plans_now``) or the cap from ``trainer.max_epochs``
        ends the run first (then the run is the epoch run, whatever the pace); every rank
        does as any one decides."""
        state, steps_per_epoch = self.state, len(self.data.train_loader)
        max_epochs = self.trainer.max_epochs
        time_budget = budget.TimeBudget(self.budget_seconds, self.trainer.budget_margin)
        pace = self.epoch_clock.pace(validation_seconds, state.checkpoint_seconds)
        max_steps = None if max_epochs is None else max_epochs * steps_per_epoch
        spent = self.elapsed()
        plan = budget.planned_steps(time_budget, spent, pace, steps_per_epoch, state.global_step)
        capped = max_steps is not None and max_steps <= plan
        ready = capped or budget.plans_now(self.epochs_run, spent, self.budget_seconds)
        if not distributed.any_rank(ready, self.runtime.device):
            return
        state.horizon.total_steps = budget.decide(
            budget=time_budget,
            spent=spent,
            pace=pace,
            steps_per_epoch=steps_per_epoch,
            steps_done=state.global_step,
            max_steps=max_steps,
        )
        state.horizon.decay_start = state.global_step
