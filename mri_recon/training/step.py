"""One optimizer step: the code every training step runs, and what the benchmarks time.

Two ways to run it, the same arithmetic:

- ``train_step``: gradients, then the host reads whether they are finite and steps the
  optimizer and schedule (or skips both). One host synchronization a step.
- deferred (``trainer.defer_sync``): ``gradients``, then ``queue_update`` steps a fused
  optimizer that skips the update on the device where the step was not finite (its
  ``found_inf``, as under a GradScaler), and the host ``settle``s the step only after the next
  step's gradients are queued: reads its loss and finite flag, steps the schedule if it was
  applied. The host never waits for the step it just queued, so a GPU is not left idle while
  the host prepares the next batch.
"""

import math
from typing import NamedTuple

import torch
from torch import nn

from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.models.interface import model_output, takes
from mri_recon.runtime import Runtime
from mri_recon.training.state import TrainState


class StepResult(NamedTuple):
    """The batch's loss, and whether the update was applied (False: NaN/Inf, skipped)."""

    loss: float
    applied: bool


class PendingStep(NamedTuple):
    """A step's loss and whether its loss and gradient norm are finite: 0-d tensors on the
    device, not yet read by the host."""

    loss: torch.Tensor
    finite: torch.Tensor


def gradients(
    state: TrainState, batch: Sample, runtime: Runtime, clip: float | None
) -> PendingStep:
    """Forward, loss, backward and gradient clipping, with no host synchronization.

    Args:
        state: the run's model, optimizer, scheduler and loss; ``state.module`` is what is
            called (the model itself, or its DDP/compiled wrapper). Counters are the caller's.
        batch: the model's input (``models.interface``: (B, 1, H, W) normalized zero-filled
            images for an image model, masked k-space for a k-space model) and the (B, 1, H, W)
            normalized targets, on any device. A batch of just images and targets
            (``Sample(images, targets)``) is enough for an image model and the L1 loss.
        runtime: device, precision (bf16 autocast) and memory format.
        clip: the maximum gradient norm; None: no clipping.
    """
    state.module.train()
    targets = batch.target.to(runtime.device, non_blocking=True)
    output = model_output(state.module, takes(state.model), batch, runtime)
    loss = state.loss(output, targets, batch)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(state.model.parameters(), clip or math.inf)
    return PendingStep(loss.detach(), torch.isfinite(loss) & torch.isfinite(grad_norm))


def train_step(
    state: TrainState, batch: Sample, runtime: Runtime, clip: float | None
) -> StepResult:
    """``gradients``, then the optimizer and scheduler steps (arguments as there).

    A step whose loss or gradient norm is NaN/Inf changes nothing: neither the weights nor the
    optimizer's moments nor the schedule.
    """
    pending = gradients(state, batch, runtime, clip)
    if not bool(pending.finite):
        return StepResult(pending.loss.item(), applied=False)
    state.optimizer.step()
    state.scheduler.step()
    return StepResult(pending.loss.item(), applied=True)


def check_deferrable(optimizer: torch.optim.Optimizer) -> None:
    """UserError unless ``optimizer`` can skip a step on the device (fused Adam, AdamW, SGD)."""
    fused = any(group.get("fused") for group in optimizer.param_groups)
    if not (fused and getattr(optimizer, "_step_supports_amp_scaling", False)):
        raise UserError(
            "trainer.defer_sync: expected a fused optimizer that can skip a step on the device "
            f"(optimizer=adam, adamw or sgd with optimizer.fused=true), got "
            f"{type(optimizer).__name__} (fused={fused}); or set trainer.defer_sync=false"
        )


def queue_update(state: TrainState, pending: PendingStep) -> None:
    """The optimizer step of ``pending``'s gradients, queued without waiting: a fused optimizer
    given ``found_inf`` leaves weights, moments and step counts as they were where it is set
    (so a NaN/Inf step changes nothing, as in ``train_step``). The schedule waits for
    ``settle``."""
    optimizer = state.optimizer
    optimizer.grad_scale, optimizer.found_inf = None, (~pending.finite).float()
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf


def settle(state: TrainState, pending: PendingStep) -> StepResult:
    """Read a queued step's loss and finite flag (the host waits for that step alone) and step
    the schedule if its update was applied."""
    applied = bool(pending.finite)
    if applied:
        state.scheduler.step()
    return StepResult(pending.loss.item(), applied)
