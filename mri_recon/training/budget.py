"""Wall-clock budgets (``trainer.max_time``): a run measures its pace in a typical epoch, then
fixes how many optimizer steps fit the budget and from then on is a run of that many steps.

The budget counts the training loop's wall clock: steps, validations and checkpoint writes, from
the first step on, summed over resumes. Start-up before the first step (imports, indexing the
data, building the model) is not counted; leave a margin for it under a Slurm time limit.

The pace is what later epochs will cost. It comes from the second epoch, the first typical
one, where the first took at most a tenth of the budget, else from the first (an epoch long
against the budget); a resumed process starts counting again. Of the first epoch a process runs,
the first step (compilation, cuDNN's tuning) is left out; of any epoch, a step more than four
times slower than the median (a recompilation for a smaller last batch). The slower steps while
the loader refills at each epoch's start stay in, since every epoch has them (on a 2-core CPU
the first step of each epoch after the first takes three times a steady one). To the steps
each epoch adds the loader's start, a validation and two checkpoint writes.
The plan fills the time left less ``trainer.budget_margin`` of it, kept for steps that get
slower later (a busy host, a CPU that clocks down).

The decision is made once, after that epoch's validation (until then the schedule holds its lr
after the warmup), and is stored in the checkpoint (the schedule's ``Horizon``): a resumed,
requeued or second-rank process never measures again, so a budget run stopped at any point
after its plan and resumed ends bit-identical to an uninterrupted one. A run stopped before its
plan measures again when resumed.

Should the steps still get slower than the plan allows, validations give way first: an epoch
after which the rest of the run, at that epoch's pace and with the margin on top, would no
longer fit skips its validation, if the rest then fits (``skip_validation``; logged; the weights
do not depend on validations, so the run stays repeatable, only its curves and best.pt have
fewer points). Only a run that is behind even then is ended at the step where its seconds
plus one validation reach the budget, validated and reported as a run that reached its end, with
a warning that names the planned step; such a run is not repeatable to the bit, since its length
then depends on the clock.
"""

import logging
import math
import re
import time
from typing import NamedTuple

import numpy as np

from mri_recon import distributed
from mri_recon.errors import UserError

log = logging.getLogger(__name__)

# A run behind its plan keeps back this many times its last validation and checkpoint writes
# (a busy host slows them too), so that it still ends inside its budget.
ENDING_SLACK = 1.5

# A run plans from its second epoch if its first took at most this fraction of the budget.
SECOND_EPOCH_WITHIN = 0.1

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


class TimeBudget(NamedTuple):
    """``trainer.max_time`` in seconds and ``trainer.budget_margin``: the fraction of the time
    left after the measured epoch that the plan keeps back."""

    seconds: float
    margin: float


class Pace(NamedTuple):
    """What the measured epoch cost in this process, in seconds: a steady optimizer step (data
    loading included), an epoch's start (until the loader's first batch), a validation and a
    checkpoint write."""

    step_seconds: float
    epoch_start_seconds: float
    validation_seconds: float
    checkpoint_seconds: float

    def epoch_overhead(self) -> float:
        """What an epoch costs beside its steps: its start, its validation, last.pt and best.pt."""
        return self.epoch_start_seconds + self.validation_seconds + 2 * self.checkpoint_seconds


class EpochClock:
    """When an epoch started, when its first batch came and when each of its steps ended.

    ``first_step_one_off``: the epoch is the first this process runs, whose first step holds
    compilation and cuDNN's tuning; in a later epoch the first step is a typical one (it waits
    for the loader's refill after the validation) and counts."""

    # How many times slower than the median a step is left out as a one-off.
    OUTLIER_FACTOR = 4.0

    def __init__(self, first_step_one_off: bool = True) -> None:
        self.first_step_one_off = first_step_one_off
        self.started = time.perf_counter()
        self.first_batch: float | None = None
        self.step_ends: list[float] = []

    def batch_arrived(self) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()

    def step_ended(self) -> None:
        self.step_ends.append(time.perf_counter())

    def start_seconds(self) -> float:
        """From the epoch's start to its first batch (0 if none came)."""
        return 0.0 if self.first_batch is None else self.first_batch - self.started

    def steady_step_seconds(self) -> float:
        """The mean time between step ends (after the first step, if that is a one-off),
        one-offs left out."""
        if not self.step_ends:
            return 0.0
        intervals = np.diff([self.first_batch or self.started, *self.step_ends])
        skip = self.first_step_one_off and len(intervals) > 1
        steady = intervals[1:] if skip else intervals
        return float(steady[steady <= self.OUTLIER_FACTOR * np.median(steady)].mean())

    def pace(self, validation_seconds: float, checkpoint_seconds: float) -> Pace:
        return Pace(
            self.steady_step_seconds(), self.start_seconds(), validation_seconds, checkpoint_seconds
        )


def plans_now(epochs_run: int, spent: float, budget_seconds: float) -> bool:
    """Whether a budget run fixes its plan at this epoch's end: after the second epoch this
    process ran (a typical one: the first holds the one-offs), or after the first where that
    took more than SECOND_EPOCH_WITHIN of the budget."""
    return epochs_run >= 2 or spent > SECOND_EPOCH_WITHIN * budget_seconds


def planned_steps(
    budget: TimeBudget, spent: float, pace: Pace, steps_per_epoch: int, steps_done: int
) -> int:
    """How many optimizer steps the whole run takes so that it ends inside the budget.

    ``spent`` seconds went into the ``steps_done`` steps and the epochs so far; of the time
    left, the budget's margin is kept back. Every further epoch costs ``steps_per_epoch``
    steps plus its overhead, and a last partial epoch gets the steps that still fit before its
    own validation and checkpoints.
    """
    usable = (budget.seconds - spent) * (1 - budget.margin)
    step_seconds = max(pace.step_seconds, 1e-9)
    epoch_seconds = steps_per_epoch * step_seconds + pace.epoch_overhead()
    full_epochs = max(0, math.floor(usable / epoch_seconds))
    left = usable - full_epochs * epoch_seconds - pace.epoch_overhead()
    extra = max(0, min(steps_per_epoch - 1, math.floor(left / step_seconds)))
    return steps_done + full_epochs * steps_per_epoch + extra


def decide(
    budget: TimeBudget,
    spent: float,
    pace: Pace,
    steps_per_epoch: int,
    steps_done: int,
    max_steps: int | None,
) -> int:
    """The run's total steps, as rank 0 measured them (every rank gets the same number); logged.

    ``max_steps`` is the cap from ``trainer.max_epochs`` (None: none).
    """
    total = planned_steps(budget, spent, pace, steps_per_epoch, steps_done)
    reason = "the budget"
    if max_steps is not None and max_steps <= total:
        total, reason = max_steps, "trainer.max_epochs (before the budget)"
    total = distributed.gather(total)[0]
    log.info(
        "budget %ds: %.4fs a steady step, %.1fs an epoch's start, %.1fs a validation, %.2fs a "
        "checkpoint; %.0fs spent in %d steps, %.0f%% of the rest kept back; the run ends at step "
        "%d (%.1f epochs), set by %s",
        budget.seconds,
        pace.step_seconds,
        pace.epoch_start_seconds,
        pace.validation_seconds,
        pace.checkpoint_seconds,
        spent,
        steps_done,
        100 * budget.margin,
        total,
        total / steps_per_epoch,
        reason,
    )
    return total


def skip_validation(
    budget: TimeBudget, spent: float, pace: Pace, steps_left: int, steps_per_epoch: int
) -> bool:
    """Whether a run behind its plan skips this epoch's validation.

    At ``pace`` (this epoch's: a busy host's), the rest of the run is its ``steps_left`` planned
    steps, each further epoch's start and last.pt, and the last epoch's validation and
    checkpoint writes (kept back ENDING_SLACK times). An epoch validates while the rest, with
    the budget's margin on top of it (steps get slower again), still fits after this validation;
    else it skips it, if that lets the rest fit. A plan out of reach either way keeps its
    validations: the run is then ended where its time runs out.
    """
    epochs_left = math.ceil(steps_left / steps_per_epoch)
    ending = pace.validation_seconds + 2 * pace.checkpoint_seconds
    rest = (
        steps_left * pace.step_seconds
        + epochs_left * (pace.epoch_start_seconds + pace.checkpoint_seconds)
        + ENDING_SLACK * ending
    )
    validated = spent + pace.validation_seconds + (1 + budget.margin) * rest
    return spent + rest <= budget.seconds < validated
