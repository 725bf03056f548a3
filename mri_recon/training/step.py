"""One optimizer step: the code every training step runs, and what the benchmarks time."""

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from mri_recon.runtime import Runtime
from mri_recon.training.state import TrainState


class StepResult(NamedTuple):
    """The batch's L1 loss, and whether the update was applied (False: NaN/Inf, skipped)."""

    loss: float
    applied: bool


def train_step(
    state: TrainState,
    images: torch.Tensor,
    targets: torch.Tensor,
    runtime: Runtime,
    clip: float | None,
) -> StepResult:
    """Forward, L1 loss, backward, gradient clipping, then optimizer and scheduler steps.

    Args:
        state: the run's model, optimizer and scheduler; ``state.module`` is what is called
            (the model itself, or its DDP/compiled wrapper). Counters are the caller's.
        images, targets: (B, 1, H, W) normalized zero-filled inputs and ground truth (any device).
        runtime: device, precision (bf16 autocast) and memory format.
        clip: the maximum gradient norm; None: no clipping.

    A step whose loss or gradient norm is NaN/Inf changes nothing: neither the weights nor the
    optimizer's moments nor the schedule.
    """
    state.module.train()
    images = runtime.images(images)
    targets = targets.to(runtime.device, non_blocking=True)
    with runtime.autocast():
        loss = F.l1_loss(state.module(images).float(), targets)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(state.model.parameters(), clip or math.inf)
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        return StepResult(loss.item(), applied=False)
    state.optimizer.step()
    state.scheduler.step()
    return StepResult(loss.item(), applied=True)
