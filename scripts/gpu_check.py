"""`make gpu-check`: what a GPU machine shows, in one command, written to docs/gpu.md.

    make gpu-check                  # or: .venv/bin/python scripts/gpu_check.py
    make gpu-check WHEELS=DIR       # offline, from `make wheels`, with the PyTorch already there
    .venv/bin/python scripts/gpu_check.py --dry-run    # every stage, small, on the CPU

    .venv/bin/python scripts/gpu_check.py --time-limit 540 --out DIR/gpu.md   # a lease's time
    .venv/bin/python scripts/gpu_check.py --stages suite,bench --tests tests/test_gpu.py \
        --bench-parts varnet,tv                                   # some stages, some parts

Each stage runs under its own time limit (and, with ``--time-limit``, within what is left of
the whole) and is reported (passed, failed, timed out, skipped) whatever the others did; the
report is rewritten after every stage, so a check stopped from outside keeps what it measured.
The exit status is 1 if any stage did not pass. In order:

1. make train's run on the GPU (32 epochs of the single-coil demo, validations included), the
   GPU's busy % sampled by nvidia-smi while it trains,
2. the first 8 epochs of that run again with ``trainer.defer_sync=true`` (the host reads each
   step's loss and NaN check one step later), its seconds an epoch and busy % beside the plain
   run's: the measurement that decides whether it becomes the default; then again with
   ``trainer.compile=reduce-overhead`` (CUDA graphs through torch.compile: fewer launches a
   step, compilation in the first epoch), the same figures,
3. where an epoch's time goes (scripts/profile_training.py): the step, waiting for batches,
   validation, checkpoints; the kernels of one step and the GPU's busy time against its wall time,
4. the test suite with CUDA visible (tests that need a GPU run; the others as on a CPU),
5. its evaluation: zero-filled, TV and the U-Net on the val split,
6. a budgeted run (``trainer.max_time``, scripts/benchmark_budget.py): its planned step and the
   share of the budget it used,
7. the GPU rows of the benchmarks (scripts/benchmark_gpu.py).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from compare_runs import read_scalars

from mri_recon.checkpoints import load_checkpoint
from mri_recon.config import PROJECT_DIR

BIN = Path(sys.executable).parent
SCRIPTS = PROJECT_DIR / "scripts"
# Seconds each stage may take (an H200 needs about half of them).
LIMITS = {
    "data": 120,
    "train": 150,
    "deferred": 60,
    "graphs": 120,
    "profile": 90,
    "suite": 240,
    "eval": 120,
    "budget": 90,
    "bench": 420,
}
DEFERRED_EPOCHS = 8
# make train's first DEFERRED_EPOCHS epochs again with one setting changed: stage -> (the
# override, the report's title for it).
RERUNS = {
    "deferred": (
        "trainer.defer_sync=true",
        "With `trainer.defer_sync=true` (its first epochs again):",
    ),
    "graphs": (
        "trainer.compile=reduce-overhead",
        "With `trainer.compile=reduce-overhead` (its first epochs again, compiled in the first):",
    ),
}
BUDGET = "00:00:45"  # the budgeted run's trainer.max_time
# A stage given less than this (of --time-limit) is skipped, not started.
SHORTEST_STAGE = 15


class Stage(NamedTuple):
    """How one stage ended: passed, failed or timed out, its seconds and its output's tail."""

    name: str
    status: str
    seconds: float
    output: str


def run_stage(name: str, command: list[str], limit: float) -> Stage:
    """Run ``command`` from the project folder, at most ``limit`` seconds (too few: skipped)."""
    if limit < SHORTEST_STAGE:
        print(f"[gpu-check] {name}: skipped, {limit:.0f} s of the time limit left", flush=True)
        return Stage(name, "skipped", 0.0, f"skipped: {limit:.0f} s of --time-limit were left")
    print(f"[gpu-check] {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    environment = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=limit, env=environment
        )
        status = "passed" if done.returncode == 0 else "failed"
        output = done.stdout if status == "passed" else done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        status = "timed out"
        output = (error.stdout or b"").decode(errors="replace") if error.stdout else ""
    seconds = time.perf_counter() - start
    print(f"[gpu-check] {name}: {status} in {seconds:.0f}s", flush=True)
    return Stage(name, status, seconds, output[-4000:])


class BusySampler:
    """nvidia-smi's GPU utilization (%), sampled every 200 ms while the block runs."""

    def __enter__(self) -> "BusySampler":
        self.process = None
        if shutil.which("nvidia-smi"):
            query = ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
            self.process = subprocess.Popen(
                ["nvidia-smi", "--id=0", *query], stdout=subprocess.PIPE, text=True
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.samples: list[float] = []
        if self.process is not None:
            self.process.terminate()
            output, _ = self.process.communicate()
            self.samples = [float(line) for line in output.split() if line.strip().isdigit()]

    def summary(self) -> str:
        if not self.samples:
            return "not measured (no nvidia-smi)"
        busy = self.samples
        return (
            f"mean {statistics.mean(busy):.0f}%, median {statistics.median(busy):.0f}%, "
            f"max {max(busy):.0f}% ({len(busy)} samples, 200 ms apart)"
        )


def machine() -> str:
    """The GPU, driver, torch and CUDA versions, the CPU cores."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    driver = ""
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "--id=0"]
        driver = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    return (
        f"{gpu} (driver {driver or 'unknown'}), torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}), Python {platform.python_version()}, {os.cpu_count()} CPU cores"
    )


def training_summary(run_dir: Path, busy: BusySampler) -> list[str]:
    """The training run's seconds, steps and validation metrics, and how busy the GPU was."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return ["No checkpoint was written."]
    state = load_checkpoint(last)
    metrics = json.loads((run_dir / "metrics.json").read_text())["val"]
    progress = state["progress"]
    _, epoch_seconds = read_scalars(run_dir).get("time/epoch_seconds", ([], []))
    later = epoch_seconds[1:]  # the first holds the start-up (and a compilation)
    steady = f"{statistics.median(later):.2f} s" if len(later) else "-"
    return [
        f"- training: {state['seconds']:.1f} s (validations and checkpoints included), "
        f"{progress['epoch']} epochs, {progress['global_step']} steps, {steady} an epoch after "
        "the first (median, its validation included)",
        f"- GPU busy while it trained: {busy.summary()}",
        f"- last validation: NMSE {metrics['NMSE']['mean']:.4f}, PSNR "
        f"{metrics['PSNR']['mean']:.2f}, SSIM {metrics['SSIM']['mean']:.4f}",
    ]


def evaluation_table(run_dir: Path) -> list[str]:
    """metrics.json of the evaluation as a table."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return ["No evaluation metrics were written."]
    results = json.loads(path.read_text())["results"]
    lines = [
        "| acceleration | method | NMSE | PSNR | SSIM | s/slice |",
        "|---|---|---|---|---|---|",
    ]
    for acceleration, methods in results.items():
        for method, value in methods.items():
            lines.append(
                f"| {acceleration}x | {method} | {value['NMSE']['mean']:.4f} | "
                f"{value['PSNR']['mean']:.2f} | {value['SSIM']['mean']:.4f} | "
                f"{value['seconds_per_slice']:.3f} |"
            )
    return lines


def suite_summary(stage: Stage) -> list[str]:
    """pytest's closing line; for a suite stopped before it, how far it got."""
    lines = stage.output.splitlines()
    closing = [line for line in lines if " passed" in line or " failed" in line]
    if closing:
        return [f"`{closing[-1]}`"]
    progress = [line for line in lines if line.rstrip().endswith("%]")]
    reached = progress[-1].rsplit("[", 1)[-1].rstrip("]") if progress else "0%"
    failures = sum(line.count("F") + line.count("E") for line in progress)
    return [f"{stage.status} at {reached.strip()} of the tests, {failures} failed or errors so far"]


def stage_section(name: str, stage: Stage, work: Path, busy: BusySampler | None) -> list[str]:
    """The report's section on one finished stage (empty for the data stage)."""
    if name == "suite":
        return ["## Test suite with CUDA visible", "", *suite_summary(stage), ""]
    if name == "train":
        summary = training_summary(work / "train", busy)
        return ["## make train's run on this machine", "", *summary, ""]
    if name in RERUNS:
        summary = training_summary(work / name, busy)
        return [RERUNS[name][1], "", *summary, ""]
    if name == "profile":
        body = stage.output.strip() if stage.status == "passed" else "-"
        return ["## Where an epoch's time goes (scripts/profile_training.py)", "", body, ""]
    if name == "eval":
        return ["## Its evaluation", "", *evaluation_table(work / "eval"), ""]
    if name == "budget":
        title = f"## A budgeted run (`trainer.max_time={BUDGET}`, scripts/benchmark_budget.py)"
        table = stage.output.split("\n\n", 1)[-1]  # past the rows printed as each run ended
        return [title, "", table.strip() if stage.status == "passed" else "-", ""]
    if name == "bench":
        body = stage.output if stage.status == "passed" else f"```\n{stage.output}\n```"
        return ["## Benchmarks (scripts/benchmark_gpu.py)", "", body.strip(), ""]
    return []


def report(stages: list[Stage], sections: list[str], command: str) -> str:
    """docs/gpu.md: the stages' table, each finished stage's section, what failed."""
    lines = [
        "# GPU check",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        "",
        "| stage | result | seconds |",
        "|---|---|---|",
        *[f"| {s.name} | {s.status} | {s.seconds:.0f} |" for s in stages],
        "",
        *sections,
    ]
    for stage in stages:
        if stage.status not in ("passed", "skipped"):
            lines += [
                f"## {stage.name}: {stage.status}",
                "",
                "```",
                stage.output.strip(),
                "```",
                "",
            ]
    return "\n".join(lines) + "\n"


def commands(work: Path, dry_run: bool, tests: list[str], bench_parts: str) -> dict[str, list[str]]:
    """Each stage's command, in the order they run (``dry_run``: small, on the CPU): the suite
    stage runs ``tests`` (all if empty), the bench stage ``bench_parts`` of benchmark_gpu.py."""
    python = str(BIN / "python")
    train = [str(BIN / "mri-recon-train"), f"hydra.run.dir={work / 'train'}"]
    train.append("trainer.max_time=null")
    reruns = {
        name: [
            str(BIN / "mri-recon-train"),
            f"hydra.run.dir={work / name}",
            "trainer.max_time=null",
            override,
            f"trainer.max_epochs={DEFERRED_EPOCHS}",
        ]
        for name, (override, _) in RERUNS.items()
    }
    profile = [python, str(SCRIPTS / "profile_training.py"), "--epochs", "4"]
    # pytest as a module: a virtual environment on top of a GPU image (make install WHEELS=DIR)
    # reaches the image's pytest but has no pytest script of its own. One thread a test
    # process, as make test has it: pytest-xdist starts a process a core.
    suite = ["env", "OMP_NUM_THREADS=1", python, "-m", "pytest", "-q", "-n", "auto"]
    suite += ["--dist", "worksteal", "-m", "not slow", "-p", "no:cacheprovider", *tests]
    evaluate = [str(BIN / "mri-recon-eval"), f"hydra.run.dir={work / 'eval'}"]
    evaluate.append(f"checkpoint={work / 'train' / 'checkpoints' / 'best.pt'}")
    evaluate.append("method=[zero_filled,tv,unet,unet_dc]")  # the U-Net with data consistency too
    budget = [python, str(SCRIPTS / "benchmark_budget.py"), "--runs", "1", "--max-time", BUDGET]
    bench = [python, str(SCRIPTS / "benchmark_gpu.py"), "--parts", bench_parts]
    if dry_run:
        train += ["trainer.max_epochs=1", "trainer.device=cpu"]
        for rerun in reruns.values():
            rerun += ["trainer.max_epochs=1", "trainer.device=cpu"]
        profile += ["--profile-steps", "2", "trainer.device=cpu"]
        suite += [] if tests else ["tests/test_devices.py"]
        evaluate += ["device=cpu"]
        budget += ["trainer.device=cpu"]
        bench += ["--size", "demo", "--device", "cpu", "--repeats", "2"]
    data = [str(BIN / "mri-recon-data"), f"out={PROJECT_DIR / 'data' / 'demo'}"]
    needs_data = not (PROJECT_DIR / "data" / "demo" / "singlecoil_train").is_dir()
    return {
        **({"data": data} if needs_data else {}),
        "train": train,
        **reruns,
        "profile": profile,
        "suite": suite,
        "eval": evaluate,
        "budget": budget,
        "bench": bench,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default: docs/gpu.md")
    parser.add_argument("--work", type=Path, default=PROJECT_DIR / "runs" / "gpu_check")
    parser.add_argument("--dry-run", action="store_true", help="small, on the CPU")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="seconds for all stages together"
    )
    parser.add_argument("--stages", default=",".join(LIMITS), help="comma-separated, in order")
    parser.add_argument("--tests", nargs="*", default=[], help="the suite stage's tests")
    parser.add_argument("--bench-parts", default="all", help="benchmark_gpu.py --parts")
    args = parser.parse_args()
    chosen = args.stages.split(",")
    unknown = sorted(set(chosen) - set(LIMITS))
    if unknown:
        parser.error(
            f"--stages: unknown {', '.join(unknown)} (expected some of {', '.join(LIMITS)})"
        )
    if not torch.cuda.is_available() and not args.dry_run:
        print(
            f"error: gpu-check: torch {torch.__version__} sees no CUDA GPU (a CPU build, or no "
            "GPU here): run it on a GPU machine, or --dry-run to check the stages on the CPU",
            file=sys.stderr,
        )
        sys.exit(2)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    command = "scripts/gpu_check.py --dry-run" if args.dry_run else "make gpu-check"
    out = args.out or (work / "gpu.md" if args.dry_run else PROJECT_DIR / "docs" / "gpu.md")
    deadline = time.monotonic() + (args.time_limit or float("inf"))
    stages: list[Stage] = []
    sections: list[str] = []
    steps = commands(work, args.dry_run, args.tests, args.bench_parts)
    # The demo data is made where it is missing, whichever stages were chosen.
    for name, stage_command in ((n, c) for n, c in steps.items() if n in [*chosen, "data"]):
        limit = min(LIMITS[name], deadline - time.monotonic())
        with BusySampler() as busy:
            stage = run_stage(name, stage_command, limit)
        stages.append(stage)
        sections += stage_section(name, stage, work, busy)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(stages, sections, command))
    print(f"[gpu-check] wrote {out}")
    sys.exit(0 if all(stage.status == "passed" for stage in stages) else 1)


if __name__ == "__main__":
    main()
