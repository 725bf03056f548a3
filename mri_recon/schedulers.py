"""Learning-rate schedules stepped once per optimizer step, each with a linear warmup.

A schedule reads where the run ends from its ``Horizon``: a run of ``max_epochs`` knows that
from the start; a run with a wall-clock budget (``trainer.max_time``) fixes it after its first
epoch (``training.budget``), and until then its schedule holds the lr after the warmup.
"""

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class Horizon:
    """Where a run's schedule ends: ``total_steps`` (None while a budget has not fixed it yet),
    and ``decay_start``, the earliest step a decay may start (a budget run's decision step)."""

    total_steps: int | None
    decay_start: int = 0


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def warmup_cosine(
    optimizer: Optimizer,
    horizon: Horizon,
    steps_per_epoch: int,
    warmup_epochs: float,
    min_lr_ratio: float,
) -> LambdaLR:
    """Linear warmup, then cosine decay to min_lr_ratio * lr at ``horizon.total_steps``."""
    warmup_steps = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        if horizon.total_steps is None:  # a budget run before it knows its length
            return 1.0
        start = max(warmup_steps, horizon.decay_start)
        progress = min(1.0, max(0, step - start) / max(1, horizon.total_steps - start))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def warmup_step(
    optimizer: Optimizer,
    horizon: Horizon,
    steps_per_epoch: int,
    warmup_epochs: float,
    milestones: list[float],
    gamma: float,
) -> LambdaLR:
    """Linear warmup, then lr multiplied by ``gamma`` at each milestone, a fraction of the run's
    ``horizon.total_steps`` (fastMRI's recipe: [0.8], gamma 0.1). A budget run lays them over its
    planned steps; one that falls before its decision step takes effect there."""
    warmup_steps = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if horizon.total_steps is None:  # a budget run before it knows its length
            return _warmup(step, warmup_steps)
        at = [
            max(round(fraction * horizon.total_steps), horizon.decay_start)
            for fraction in milestones
        ]
        decays = sum(step >= milestone for milestone in at)
        return _warmup(step, warmup_steps) * gamma**decays

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, horizon: Horizon, steps_per_epoch: int) -> LambdaLR:
    """The optimizer's lr throughout."""
    return LambdaLR(optimizer, lambda step: 1.0)
