"""Do budgeted runs end where they planned? `mri-recon-train trainer.max_time=T`, run N times.

    .venv/bin/python scripts/benchmark_budget.py [--runs 10] [--max-time 00:01:00] [ARGS...]

Each run is the command users run (the console script, a fresh process), on the demo data with
``trainer.max_epochs=null``; ARGS are further overrides (e.g. ``data.challenge=multicoil``).
For each: the step its plan fixed, whether it ended there (the schedule finished; a run that
fell behind its plan is cut, which its log says), how many epochs' validations it skipped to stay
on its plan, and the share of the budget its training loop used. Prints a markdown table for
docs/benchmarks.md.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from mri_recon.checkpoints import load_checkpoint
from mri_recon.training.budget import parse_max_time

PLANNED = re.compile(r"the run ends at step (\d+)")
SKIPPED = "validation skipped"


def one_run(run_dir: Path, max_time: str, overrides: list[str]) -> dict:
    """Train once into ``run_dir``; the plan, the end and the seconds used."""
    command = [str(Path(sys.executable).parent / "mri-recon-train"), f"hydra.run.dir={run_dir}"]
    command += ["trainer.max_epochs=null", f"trainer.max_time={max_time}", *overrides]
    subprocess.run(
        command, check=True, capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    log = (run_dir / "train.log").read_text()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    planned, steps = int(PLANNED.search(log).group(1)), state["progress"]["global_step"]
    return {
        "planned": planned,
        "steps": steps,
        "cut": steps < planned,  # a run behind its plan was ended early (its log says so)
        "skipped": log.count(SKIPPED),
        "used": state["seconds"] / parse_max_time(max_time),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-time", default="00:01:00")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows = [
        "| run | planned step | last step | ended as planned | validations skipped | budget used |"
    ]
    rows.append("|---|---|---|---|---|---|")
    ended = 0
    with tempfile.TemporaryDirectory() as work:
        for index in range(args.runs):
            result = one_run(Path(work) / str(index), args.max_time, args.overrides)
            ended += not result["cut"]
            rows.append(
                f"| {index + 1} | {result['planned']} | {result['steps']} | "
                f"{'yes' if not result['cut'] else 'no, cut'} | {result['skipped']} | "
                f"{100 * result['used']:.1f}% |"
            )
            print(rows[-1], flush=True)
    print(f"\n{ended} of {args.runs} runs ended at their planned step.\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
