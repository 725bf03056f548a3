"""Wall-clock budgets (trainer.max_time): the parsing, the plan, and budget runs that end at
their planned step with the schedule finished, also after a SIGKILL and resume."""

import json
import logging
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mri_recon.errors import UserError
from mri_recon.schedulers import Horizon, warmup_step
from mri_recon.training import budget
from mri_recon.training.loop import Training
from mri_recon.training.settings import check_config

from .conftest import compose_config, train_in_process
from .test_faults import SIGNAL_AT_STEP, checkpoint_step, resume_and_compare, train_args

STEPS_PER_EPOCH = 5  # the tiny dataset: 9 training slices, batch 2
PLANNED = 13  # a budget's decision, fixed so that the tests do not depend on this CPU's speed
# mri-recon-train whose budget plans PLANNED steps and that signals itself at a step.
PLAN_THEN_SIGNAL = (
    f"from mri_recon.training import budget\nbudget.planned_steps = lambda *a, **k: {PLANNED}\n"
    + SIGNAL_AT_STEP
)


def saved(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("00:06:00", 360),
        ("1:30:00", 5400),
        ("45", 45 * 60),
        ("45:30", 45 * 60 + 30),
        ("2-00", 2 * 86400),
        ("1-12:30", 86400 + 12 * 3600 + 30 * 60),
        ("1-00:00:05", 86405),
    ],
)
def test_max_time_reads_slurms_formats(text: str, seconds: int) -> None:
    assert budget.parse_max_time(text) == seconds


@pytest.mark.parametrize("seconds", [0.2, 59.0, 267.4, 3600.0, 86400.5, 200000.0])
def test_a_runs_time_is_written_as_max_time_reads_it(seconds: float) -> None:
    assert budget.parse_max_time(budget.slurm_time(seconds)) == math.ceil(seconds)


@pytest.mark.parametrize(
    "value, message",
    [
        (5400, "got the number 5400 (quote a time"),
        ("ten minutes", "expected a time as Slurm writes it"),
        ("1:2:3:4", "expected a time as Slurm writes it"),
        ("00:00:00", "expected a positive time"),
    ],
)
def test_max_time_that_cannot_work_is_one_line(value: object, message: str) -> None:
    with pytest.raises(UserError, match="trainer.max_time: ") as error:
        budget.parse_max_time(value)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_run_needs_an_epoch_count_or_a_budget() -> None:
    cfg = compose_config("train", ["trainer.max_epochs=null"])
    with pytest.raises(UserError, match="null only with trainer.max_time"):
        check_config(cfg)
    check_config(compose_config("train", ["trainer.max_epochs=null", "trainer.max_time=10:00"]))


def test_plan_fills_the_budget_with_epochs_then_a_partial_one() -> None:
    # 10 s spent in epoch 1 (10 steps); 1 s a step, 5 s a validation, 110 s budget: six full
    # epochs (15 s each) and 5 steps of a seventh, then its validation, end at exactly 110 s.
    pace = budget.Pace(1.0, 0.0, 5.0, 0.0)
    no_margin = budget.TimeBudget(110, margin=0)
    total = budget.planned_steps(no_margin, 10, pace, steps_per_epoch=10, steps_done=10)
    assert total == 75
    assert 10 + (total - 10) * 1.0 + 7 * 5.0 == 110
    # Nothing left after the first epoch: the run ends there.
    assert budget.planned_steps(budget.TimeBudget(12, 0), 10, pace, 10, 10) == 10


def test_plan_counts_each_epochs_start_and_checkpoints_and_keeps_its_margin() -> None:
    # Each epoch: 10 steps of 1 s, 1 s of loader start, 3 s of validation, 2 x 0.5 s of
    # checkpoints = 15 s. 100 s left, 10% kept: 90 s = six epochs, nothing of a seventh.
    pace = budget.Pace(1.0, 1.0, 3.0, 0.5)
    assert pace.epoch_overhead() == 5.0
    assert budget.planned_steps(budget.TimeBudget(110, margin=0.1), 10, pace, 10, 10) == 70
    # Without the margin, 10 s more: 5 steps of a seventh epoch fit before its overhead.
    assert budget.planned_steps(budget.TimeBudget(110, margin=0), 10, pace, 10, 10) == 75


def clock_with(first_batch: float, step_ends: list[float]) -> budget.EpochClock:
    clock = budget.EpochClock()
    clock.started, clock.first_batch, clock.step_ends = 0.0, first_batch, step_ends
    return clock


def test_the_pace_leaves_the_warmup_and_one_offs_out() -> None:
    """A first epoch of 20 steps: 2 s for the first batch, a 30 s first step (compilation), a
    second one compiled again (1 s), then 0.1 s steps, 0.2 s while the loader refills, and the
    last one recompiled (5 s). The refilling stays in: every epoch has it."""
    intervals = [30.0, 1.0] + [0.2] * 2 + [0.1] * 15 + [5.0]
    ends = list(2.0 + np.cumsum(intervals))
    clock = clock_with(2.0, ends)
    assert clock.steady_step_seconds() == pytest.approx((0.4 + 1.5) / 17)
    assert clock.start_seconds() == 2.0
    pace = clock.pace(validation_seconds=3.0, checkpoint_seconds=0.25)
    assert pace == pytest.approx(budget.Pace(1.9 / 17, 2.0, 3.0, 0.25))
    # The first epoch's average, as the plan was made before: 2.0 s a step, 18x too slow.
    assert (ends[-1] - clock.started) / len(ends) == pytest.approx(1.995)


def test_a_typical_epochs_first_step_counts() -> None:
    """After the first epoch of a process, an epoch's slow first step (the loader refilling
    after the validation) is a step like the others: a plan without it falls short each epoch."""
    clock = clock_with(2.0, list(2.0 + np.cumsum([0.3] + [0.1] * 9)))
    assert clock.steady_step_seconds() == pytest.approx(0.1)
    clock.first_step_one_off = False
    assert clock.steady_step_seconds() == pytest.approx(1.2 / 10)


def test_a_run_plans_from_its_second_epoch_unless_the_first_was_long() -> None:
    assert not budget.plans_now(epochs_run=1, spent=6.0, budget_seconds=60)
    assert budget.plans_now(epochs_run=2, spent=12.0, budget_seconds=60)
    assert budget.plans_now(epochs_run=1, spent=6.5, budget_seconds=60)  # over a tenth


def test_the_pace_of_a_very_short_epoch() -> None:
    assert clock_with(1.0, [3.0]).steady_step_seconds() == 2.0  # one step: that step
    assert clock_with(1.0, [3.0, 3.5]).steady_step_seconds() == 0.5
    assert clock_with(None, []).steady_step_seconds() == 0.0


def step_factors(horizon: Horizon, steps: int) -> list[float]:
    """The lr factor of ``scheduler=step`` (warmup 1 epoch of 5 steps, milestones [0.5, 0.8],
    gamma 0.1) at each of ``steps`` optimizer steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_step(optimizer, horizon, 5, 1.0, [0.5, 0.8], 0.1)
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return factors


def test_step_schedule_decays_at_fractions_of_the_run() -> None:
    factors = step_factors(Horizon(total_steps=40), 40)
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # warmup
    assert factors[19] == 1.0 and factors[20] == pytest.approx(0.1)  # 50% of 40 steps
    assert factors[31] == pytest.approx(0.1) and factors[32] == pytest.approx(0.01)  # 80%


def test_step_schedule_is_laid_over_a_budgets_plan() -> None:
    """Before the decision the lr holds; then the milestones fall at fractions of the planned
    steps, and one that would lie before the decision step takes effect there."""
    horizon = Horizon(None)
    held = step_factors(horizon, 12)
    assert held[5:] == [1.0] * 7
    horizon.total_steps, horizon.decay_start = 20, 12  # decided after step 12
    factors = step_factors(horizon, 20)
    assert factors[11] == 1.0 and factors[12] == pytest.approx(0.1)  # 50% = step 10 -> 12
    assert factors[15] == pytest.approx(0.1) and factors[16] == pytest.approx(0.01)  # 80% of 20


@pytest.mark.parametrize("milestones", ["[8]", "[0]", "0.8", "[a]"])
def test_step_milestones_that_cannot_work_are_one_line(milestones: str) -> None:
    cfg = compose_config("train", ["scheduler=step", f"scheduler.milestones={milestones}"])
    with pytest.raises(UserError, match=r"scheduler.milestones: expected a list of fractions"):
        check_config(cfg)


def test_budget_run_ends_at_its_planned_step_with_the_schedule_finished(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan of 13 steps (as a budget would fix it after epoch 2, the first typical one): two
    full epochs and 3 steps of a third, validated; the cosine reaches its minimum at step 13."""
    monkeypatch.setattr(budget, "planned_steps", lambda *args, **kwargs: PLANNED)
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "debug=tiny"]
    args += ["trainer.max_epochs=null", "trainer.max_time=00:10:00"]
    result = train_in_process(tmp_path / "run", *args)
    state = saved(tmp_path / "run")
    assert state["progress"]["budget_steps"] == state["progress"]["global_step"] == PLANNED
    assert state["progress"]["epoch"] == 3 and result.stopped_by is None
    cfg = compose_config("train", args)
    lr = state["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(cfg.optimizer.lr * cfg.scheduler.min_lr_ratio)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epoch"] == 3 and metrics["hparams"]["max_time"] == "00:10:00"
    assert metrics["val"] == result.metrics and "SSIM" in metrics["val"]


def test_budget_that_max_epochs_ends_first_is_the_epoch_run(
    tiny_root: Path, tmp_path: Path
) -> None:
    """A budget longer than max_epochs changes nothing: the same steps, schedule and weights
    (so `make train` on a fast CPU is the plain 16-epoch run)."""
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "debug=tiny"]
    args.append("trainer.max_epochs=2")
    plain = train_in_process(tmp_path / "plain", *args)
    capped = train_in_process(tmp_path / "capped", *args, "trainer.max_time=01:00:00")
    assert capped.metrics == plain.metrics
    a, b = saved(tmp_path / "plain"), saved(tmp_path / "capped")
    assert b["progress"]["budget_steps"] == a["progress"]["global_step"] == 2 * STEPS_PER_EPOCH
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_budget_run_killed_then_resumed_matches_uninterrupted(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL after the budget fixed the run's length (step 12, in epoch 3; the plan came after
    epoch 2): the resumed run, which must not plan again, ends equal to an uninterrupted run with
    the same plan."""
    budget_args = ["trainer.max_epochs=null", "trainer.max_time=00:10:00"]
    run_dir = tmp_path / "killed" / "run"
    args = [str(12), str(int(signal.SIGKILL)), "process"]
    args += train_args(tiny_root, run_dir, *budget_args)
    killed = subprocess.run(
        [sys.executable, "-c", PLAN_THEN_SIGNAL, *args], capture_output=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL and checkpoint_step(run_dir) >= 10
    assert saved(run_dir)["progress"]["budget_steps"] == PLANNED

    straight = tmp_path / "straight" / "run"
    monkeypatch.setattr(budget, "planned_steps", lambda *args, **kwargs: PLANNED)
    args = [a for a in train_args(tiny_root, straight, *budget_args) if "hydra." not in a]
    train_in_process(straight, *args)
    # Resumed by a plain mri-recon-train: had it planned again, with this CPU's real pace, its
    # length would differ.
    resume_and_compare(run_dir, straight)
    assert saved(run_dir)["progress"] == saved(straight)["progress"]
    assert (run_dir / "metrics.json").read_text() == (straight / "metrics.json").read_text()


def test_every_rank_takes_rank_0s_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks measure different paces; the run length is rank 0's on all of them (else one
    rank would stop while the others wait in a collective)."""
    monkeypatch.setattr(budget.distributed, "gather", lambda total: [40, total])
    pace = budget.Pace(0.1, 0.0, 0.5, 0.0)  # this rank: fast
    assert budget.decide(budget.TimeBudget(100, 0.05), 2, pace, 10, 10, max_steps=None) == 40


def test_a_run_behind_its_plan_skips_a_validation_only_where_that_saves_the_plan() -> None:
    """Steps of 1 s, epochs of 10 steps whose start and last.pt cost 0.5 s, validations of 4 s,
    30 steps left: 30 + 3 * 0.5 + 1.5 * 4 = 37.5 s of work left (41.25 s with the 10% margin),
    and a validation now adds 4 s."""
    pace = budget.Pace(
        step_seconds=1.0, epoch_start_seconds=0.5, validation_seconds=4.0, checkpoint_seconds=0.0
    )

    def skip(spent: float) -> bool:
        return budget.skip_validation(
            budget.TimeBudget(100, 0.1), spent, pace, steps_left=30, steps_per_epoch=10
        )

    assert not skip(54.75)  # 54.75 + 4 + 41.25 = 100: on plan with the margin, validated
    assert skip(55) and skip(62.5)  # behind: only without this validation does the rest fit
    assert not skip(63)  # out of reach either way: validated, and the run is ended in time


def test_a_skipped_validation_leaves_the_run_as_it_was(
    tiny_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A budget run that skips epoch 3's validation (as behind its plan, fixed after epoch 2)
    ends at its planned step with the weights, optimizer and final metrics of one that
    validated every epoch; the log says which validation was left out."""
    caplog.set_level(logging.INFO, logger="mri_recon")
    planned = 18  # three full epochs and 3 steps of a fourth
    monkeypatch.setattr(budget, "planned_steps", lambda *args, **kwargs: planned)
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "debug=tiny"]
    args += ["trainer.max_epochs=null", "trainer.max_time=00:10:00"]
    validated = train_in_process(tmp_path / "validated", *args)
    assert "validation skipped" not in caplog.text
    # Epoch 3 ends at step 15, with 3 planned steps left.
    monkeypatch.setattr(budget, "skip_validation", lambda **kwargs: kwargs["steps_left"] == 3)
    skipped = train_in_process(tmp_path / "skipped", *args)
    assert "epoch 3/4  train loss" in caplog.text
    assert (
        "validation skipped: behind the budget's plan, so that the run still reaches step 18"
        in caplog.text
    )
    a, b = saved(tmp_path / "validated"), saved(tmp_path / "skipped")
    assert b["progress"]["global_step"] == b["progress"]["budget_steps"] == planned
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert str(a["optimizer"]) == str(b["optimizer"])
    assert skipped.metrics == validated.metrics and "SSIM" in skipped.metrics
    written = json.loads((tmp_path / "skipped" / "metrics.json").read_text())
    assert written["val"] == validated.metrics and written["best"]["epoch"] != 3


def test_budget_run_behind_its_plan_ends_inside_its_budget(
    tiny_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plan far longer than the budget allows (as after a first epoch that ran fast): the run
    ends where its seconds plus one validation reach the budget, validated and complete."""
    caplog.set_level(logging.INFO, logger="mri_recon")
    monkeypatch.setattr(budget, "planned_steps", lambda *args, **kwargs: 100_000)
    # The loop's seconds and its last validation and checkpoint write when it ended the run (the
    # final validation, timed afresh, may be faster than the one the decision counted).
    decisions = []
    end_here = Training.end_budget_here

    def record(self: Training) -> None:
        state = self.state
        ending = state.validation_seconds + 2 * state.checkpoint_seconds
        decisions.append((self.elapsed(), ending))
        end_here(self)

    monkeypatch.setattr(Training, "end_budget_here", record)
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "debug=tiny"]
    args += ["trainer.max_epochs=null", "trainer.max_time=00:00:02"]
    result = train_in_process(tmp_path / "run", *args)
    state = saved(tmp_path / "run")
    progress = state["progress"]
    assert STEPS_PER_EPOCH <= progress["global_step"] < 100_000
    assert progress["budget_steps"] == progress["global_step"] and result.stopped_by is None
    (elapsed, ending), *others = decisions
    assert not others and elapsed + budget.ENDING_SLACK * ending >= 2
    assert state["seconds"] >= elapsed  # last.pt, after the final validation
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"] == result.metrics and "SSIM" in metrics["val"]
    assert "of the 100000 planned" in caplog.text
    took = re.search(r"training took (\S+), validations included", caplog.text).group(1)
    assert budget.parse_max_time(took) == math.ceil(state["seconds"])


def test_budget_run_behind_its_plan_at_an_epochs_end_ends_there(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When an epoch's validation leaves no time for another step and validation, the run ends
    with that epoch (not after one more step and a second validation). A clock of 1.8 s a
    step and 1.5 s a validation, a 20 s budget: 19.5 s at step 10, 21 s after epoch 2."""
    monkeypatch.setattr(budget, "planned_steps", lambda *args, **kwargs: 100_000)
    monkeypatch.setattr(
        Training, "elapsed", lambda self: 1.8 * self.state.global_step + 1.5 * self.state.epoch
    )
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "debug=tiny"]
    args += ["trainer.max_epochs=null", "trainer.max_time=00:00:20"]
    result = train_in_process(tmp_path / "run", *args)
    progress = saved(tmp_path / "run")["progress"]
    assert progress["global_step"] == progress["budget_steps"] == 2 * STEPS_PER_EPOCH
    assert progress["epoch"] == 2 and progress["batches_done"] == 0
    assert result.stopped_by is None and "SSIM" in result.metrics
