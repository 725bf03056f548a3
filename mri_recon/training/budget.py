"""Wall-clock budgets (``trainer.max_time``): a run measures its pace in its first epoch, then
fixes how many optimizer steps fit the budget and from then on is a run of that many steps.

The budget counts the training loop's wall clock: steps, validations and checkpoint writes, from
the first step on, summed over resumes. Start-up before the first step (imports, indexing the
data, building the model) is not counted; leave a margin for it under a Slurm time limit.

The decision is made once, after the first epoch's validation, from that epoch's measured
seconds per step and seconds of validation, and is stored in the checkpoint (the schedule's
``Horizon``): a resumed, requeued or second-rank process never measures again, so a budget run
stopped at any point after its first epoch and resumed ends bit-identical to an uninterrupted
one. A run stopped inside its first epoch measures again when resumed.

A plan can only be as good as that first epoch's pace: when the steps get slower later (a busy
host, a CPU that clocks down), the loop ends the run at the step where its seconds plus one
validation reach the budget, validated and reported as a run that reached its end, with a
warning that names the planned step; such a run is not repeatable to the bit, since its length
then depends on the clock.
"""

import logging
import math
import re
from typing import NamedTuple

from mri_recon import distributed
from mri_recon.errors import UserError

log = logging.getLogger(__name__)

# Slurm's --time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_max_time(value: object) -> int | None:
    """``trainer.max_time`` in seconds (None: no budget); UserError for anything else.

    A bare number is refused: YAML reads an unquoted ``1:30:00`` in a config file as the
    number 5400, which Slurm's rules would take as minutes.
    """
    if value is None:
        return None
    expected = "a time as Slurm writes it (HH:MM:SS, MM:SS or D-HH:MM:SS, e.g. 00:06:00) or null"
    if not isinstance(value, str):
        raise UserError(
            f"trainer.max_time: expected {expected}, got the number {value!r} (quote a time "
            "in a config file: max_time: '01:30:00')"
        )
    match = SLURM_TIME.fullmatch(value.strip())
    if match is None:
        raise UserError(f"trainer.max_time: expected {expected}, got {value!r}")
    days, first, second, third = (int(part) if part else 0 for part in match.groups())
    if match.group(1) or match.group(4):  # D-HH[:MM[:SS]] or HH:MM:SS
        hours, minutes, seconds = first, second, third
    else:  # MM[:SS]
        hours, minutes, seconds = 0, first, second
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise UserError(f"trainer.max_time: expected a positive time, got {value!r}")
    return total


def slurm_time(seconds: float) -> str:
    """``seconds`` rounded up, as ``trainer.max_time`` reads it: HH:MM:SS (D-HH:MM:SS from a
    day on)."""
    total = math.ceil(seconds)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


class Pace(NamedTuple):
    """What the first epoch measured in this process: its training seconds (data loading
    included) and optimizer steps, and its validation's seconds."""

    train_seconds: float
    steps: int
    validation_seconds: float


def planned_steps(
    budget: float,
    spent: float,
    step_seconds: float,
    validation_seconds: float,
    steps_per_epoch: int,
    steps_done: int,
) -> int:
    """How many optimizer steps the whole run takes so that it ends inside ``budget`` seconds.

    ``spent`` seconds went into the ``steps_done`` steps and the validations so far; every
    further epoch costs ``steps_per_epoch * step_seconds`` plus a validation, and a last partial
    epoch gets the steps that still fit before its own validation.
    """
    remaining = budget - spent
    epoch_seconds = steps_per_epoch * step_seconds + validation_seconds
    full_epochs = max(0, math.floor(remaining / epoch_seconds))
    left = remaining - full_epochs * epoch_seconds - validation_seconds
    extra = max(0, min(steps_per_epoch - 1, math.floor(left / step_seconds)))
    return steps_done + full_epochs * steps_per_epoch + extra


def decide(
    budget: float,
    spent: float,
    pace: Pace,
    steps_per_epoch: int,
    steps_done: int,
    max_steps: int | None,
) -> int:
    """The run's total steps, as rank 0 measured them (every rank gets the same number); logged.

    ``max_steps`` is the cap from ``trainer.max_epochs`` (None: none).
    """
    step_seconds = pace.train_seconds / max(1, pace.steps)
    validation = pace.validation_seconds
    total = planned_steps(budget, spent, step_seconds, validation, steps_per_epoch, steps_done)
    reason = "the budget"
    if max_steps is not None and max_steps <= total:
        total, reason = max_steps, "trainer.max_epochs (before the budget)"
    total = distributed.gather(total)[0]
    log.info(
        "budget %ds: %.3fs a step, %.1fs a validation, %.0fs spent in %d steps; the run ends "
        "at step %d (%.1f epochs), set by %s",
        budget,
        step_seconds,
        validation,
        spent,
        steps_done,
        total,
        total / steps_per_epoch,
        reason,
    )
    return total
