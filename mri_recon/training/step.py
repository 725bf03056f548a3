"""One optimizer step: the code every training step runs, and what the benchmarks time."""

import math
from typing import NamedTuple

import torch
from torch import nn

from mri_recon.data.transforms import Sample
from mri_recon.models.interface import model_output, takes
from mri_recon.runtime import Runtime
from mri_recon.training.state import TrainState


class StepResult(NamedTuple):
    """The batch's loss, and whether the update was applied (False: NaN/Inf, skipped)."""

    loss: float
    applied: bool


def train_step(
    state: TrainState, batch: Sample, runtime: Runtime, clip: float | None
) -> StepResult:
    """Forward, loss, backward, gradient clipping, then optimizer and scheduler steps.

    Args:
        state: the run's model, optimizer, scheduler and loss; ``state.module`` is what is
            called (the model itself, or its DDP/compiled wrapper). Counters are the caller's.
        batch: the model's input (``models.interface``: (B, 1, H, W) normalized zero-filled
            images for an image model, masked k-space for a k-space model) and the (B, 1, H, W)
            normalized targets, on any device. A batch of just images and targets
            (``Sample(images, targets)``) is enough for an image model and the L1 loss.
        runtime: device, precision (bf16 autocast) and memory format.
        clip: the maximum gradient norm; None: no clipping.

    A step whose loss or gradient norm is NaN/Inf changes nothing: neither the weights nor the
    optimizer's moments nor the schedule.
    """
    state.module.train()
    targets = batch.target.to(runtime.device, non_blocking=True)
    output = model_output(state.module, takes(state.model), batch, runtime)
    loss = state.loss(output, targets, batch)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(state.model.parameters(), clip or math.inf)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        return StepResult(loss.item(), applied=False)
    state.optimizer.step()
    state.scheduler.step()
    return StepResult(loss.item(), applied=True)
