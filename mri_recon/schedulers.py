"""Learning-rate schedules stepped once per optimizer step, each with a linear warmup."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    min_lr_ratio: float,
) -> LambdaLR:
    """Linear warmup, then cosine decay from lr to min_lr_ratio * lr at ``total_steps``."""
    warmup_steps = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return _warmup(step, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def warmup_step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    step_epochs: int,
    gamma: float,
) -> LambdaLR:
    """Linear warmup, then lr multiplied by ``gamma`` every ``step_epochs`` epochs."""
    warmup_steps = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        decays = step // (step_epochs * steps_per_epoch)
        return _warmup(step, warmup_steps) * gamma**decays

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LambdaLR:
    """The optimizer's lr throughout."""
    return LambdaLR(optimizer, lambda step: 1.0)
