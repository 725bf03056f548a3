"""Compare training runs: one plot and one Markdown table, for a sweep or any runs you point at.

    .venv/bin/python scripts/compare_runs.py runs/ablations/<time>/optimizer
    .venv/bin/python scripts/compare_runs.py runs/train/A runs/train/B --out /tmp/a_vs_b
    .venv/bin/python scripts/compare_runs.py SWEEP_DIR --where model.norm=group --where seed=0

Every folder given is a run directory (it holds TensorBoard events) or is searched for them;
evaluation runs are skipped. Runs whose Hydra overrides differ only in `seed` form one
configuration, named by the overrides that differ between configurations. The table gives per
configuration the final validation SSIM/PSNR/NMSE as mean over seeds with their spread
(max - min), the SSIM after the first epoch (early progress), the last epoch's training and
validation L1 loss, the best epoch of each seed, the optimizer steps and the wall-clock per run; the plot draws
validation SSIM and training loss against the optimizer step, one line per run (a colour per
configuration, a line style per seed). Writes <out>.png and <out>.md (default out:
<first folder>/comparison) and prints the table.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

METRICS = ("SSIM", "PSNR", "NMSE")
LOSSES = ("train loss", "val loss")  # L1, last epoch
TRAIN_LOSS_TAGS = {"train/loss", "train/epoch_loss"}  # either gives the "train loss" column
DIGITS = {"SSIM": 4, "PSNR": 2, "NMSE": 4}
# Overrides that never tell configurations apart.
IGNORED_OVERRIDES = ("seed=", "experiment=", "hydra.")
SMOOTHING = 0.6  # TensorBoard's default exponential smoothing of the training loss


@dataclass
class Run:
    """One training run as read back from its directory."""

    path: Path
    overrides: list[str]
    seed: int | None
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values)
    status: str = "done"  # done, incomplete (no metrics.json) or diverged
    final: dict[str, float] = field(default_factory=dict)  # SSIM/PSNR/NMSE after the last epoch
    best_epoch: int | None = None
    seconds: float | None = None
    lr: float | None = None
    label: str = ""


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories in ``paths``: each path itself if it holds events, else those below."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            sys.exit(f"error: {path}: no such folder (expected a run or sweep directory)")
        if list(path.glob("events.out.tfevents.*")):
            found.append(path)
            continue
        below = sorted({event.parent for event in path.rglob("events.out.tfevents.*")})
        found.extend(sorted(below, key=natural_key))
    return found


def natural_key(path: Path) -> tuple:
    """Sort Hydra job folders 0, 1, ..., 10 in numeric order."""
    return tuple(int(part) if part.isdigit() else part for part in path.parts)


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar tag of the run's TensorBoard events as (steps, values) arrays."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    curves = {}
    for tag in events.Tags()["scalars"]:
        scalars = events.Scalars(tag)
        curves[tag] = (
            np.array([s.step for s in scalars]),
            np.array([s.value for s in scalars]),
        )
    return curves


def read_run(run_dir: Path) -> Run:
    """Overrides, seed, curves and final metrics of one run directory."""
    hydra_dir = run_dir / ".hydra"
    overrides, seed = [], None
    if (hydra_dir / "overrides.yaml").is_file():
        overrides = [str(item) for item in OmegaConf.load(hydra_dir / "overrides.yaml")]
    if (hydra_dir / "config.yaml").is_file():
        seed = OmegaConf.load(hydra_dir / "config.yaml").get("seed")
    run = Run(run_dir, overrides, seed, read_scalars(run_dir))

    metrics_file = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as error:
        print(f"warning: {metrics_file}: unreadable ({error}); using the events", file=sys.stderr)
        metrics = {}
    if "diverged" in metrics:
        run.status = "diverged"
    elif "val" in metrics:
        run.final = {name: metrics["val"][name]["mean"] for name in METRICS}
        run.best_epoch = metrics["best"]["epoch"]
        run.lr = metrics.get("hparams", {}).get("lr")
    elif "val/SSIM" in run.curves:  # still running or stopped: its last validation
        run.status = "incomplete"
        run.final = {name: float(run.curves[f"val/{name}"][1][-1]) for name in METRICS}
        run.best_epoch = int(np.argmax(run.curves["val/SSIM"][1])) + 1
    else:
        run.status = "incomplete"
    if run.final and "val/loss" in run.curves and TRAIN_LOSS_TAGS & run.curves.keys():
        run.final.update(last_epoch_losses(run.curves))

    if "time/epoch_seconds" in run.curves:  # absent until the first epoch ends
        run.seconds = float(run.curves["time/epoch_seconds"][1].sum())
    return run


def last_epoch_losses(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The last epoch's mean training loss (train mode: BatchNorm uses batch statistics) and the
    last validation loss (eval mode: running statistics). Runs written before
    ``train/epoch_loss`` existed get the mean of the losses logged in their last epoch (NaN when
    a budget's short last epoch logged none)."""
    val_steps, val_losses = curves["val/loss"]
    if "train/epoch_loss" in curves:
        return {
            "train loss": float(curves["train/epoch_loss"][1][-1]),
            "val loss": float(val_losses[-1]),
        }
    train_steps, train_losses = curves["train/loss"]
    start = val_steps[-2] if len(val_steps) > 1 else 0
    last_epoch = (train_steps > start) & (train_steps <= val_steps[-1])
    train = float(train_losses[last_epoch].mean()) if last_epoch.any() else float("nan")
    return {"train loss": train, "val loss": float(val_losses[-1])}


def label_runs(runs: list[Run]) -> None:
    """Name each run's configuration by the overrides that are not shared by all runs.

    Runs that differ only in seed share a name ("all runs" when nothing else differs; a lone run
    is named by its folder); runs that cannot be told apart that way (the same seed twice) are
    named by their folders.
    """
    kept = [
        [item for item in run.overrides if not item.startswith(IGNORED_OVERRIDES)] for run in runs
    ]
    shared = set.intersection(*(set(items) for items in kept))
    for run, items in zip(runs, kept, strict=True):
        differing = [item for item in items if item not in shared]
        run.label = " ".join(differing) or ("all runs" if len(runs) > 1 else run.path.name)
    for members in group(runs).values():
        seeds = [run.seed for run in members]
        if len(members) > 1 and (None in seeds or len(set(seeds)) < len(seeds)):
            for run in members:
                run.label = str(run.path)


def is_training_run(run: Run) -> bool:
    """Training runs log train/ or val/ scalars (or diverged before); evaluation runs do not."""
    return run.status == "diverged" or any(tag.startswith(("train/", "val/")) for tag in run.curves)


def matches(run: Run, conditions: list[str]) -> bool:
    """Whether the run was made with every ``key=value`` in ``conditions`` (seed=N included).

    Numbers match by value: ``optimizer.lr=1e-3`` matches the ``optimizer.lr=0.001`` Hydra writes.
    """
    items = dict(item.split("=", 1) for item in run.overrides if "=" in item)
    if run.seed is not None:
        items.setdefault("seed", str(run.seed))
    for condition in conditions:
        key, _, value = condition.partition("=")
        if key not in items or not same_value(items[key], value):
            return False
    return True


def same_value(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def group(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by configuration label, in the order the configurations first appear."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    return groups


def mean_and_spread(values: list[float], digits: int) -> str:
    """``mean (spread)`` over seeds; just the value for one seed."""
    if not values:
        return "–"
    mean = f"{np.mean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ({max(values) - min(values):.{digits}f})"


def table(runs: list[Run]) -> str:
    """The Markdown table: one row per configuration, best mean SSIM first."""
    rows = []
    for label, members in group(runs).items():
        finished = [run for run in members if run.final]
        seeds = ", ".join(str(run.seed) for run in members)
        notes = [f"{run.status} (seed {run.seed})" for run in members if run.status != "done"]
        lrs = sorted({run.lr for run in finished if run.lr is not None})
        seconds = [run.seconds for run in members if run.seconds is not None]
        ssim = [run.final["SSIM"] for run in finished]
        first_ssim = [float(run.curves["val/SSIM"][1][0]) for run in finished]  # early progress
        steps = [int(run.curves["val/SSIM"][0][-1]) for run in finished]  # at the last epoch
        rows.append(
            (
                np.mean(ssim) if ssim else -np.inf,
                [
                    label,
                    ", ".join(f"{lr:g}" for lr in lrs) or "–",
                    seeds,
                    *(mean_and_spread([r.final[m] for r in finished], DIGITS[m]) for m in METRICS),
                    mean_and_spread(first_ssim, DIGITS["SSIM"]),
                    *(
                        mean_and_spread([r.final[m] for r in finished if m in r.final], 4)
                        for m in LOSSES
                    ),
                    ", ".join(str(run.best_epoch) for run in finished) or "–",
                    f"{np.mean(steps):.0f}" if steps else "–",
                    f"{np.mean(seconds):.1f}" if seconds else "–",
                    "; ".join(notes),
                ],
            )
        )
    rows.sort(key=lambda row: -row[0])
    header = [
        "configuration",
        "lr",
        "seeds",
        "SSIM ↑",
        "PSNR ↑",
        "NMSE ↓",
        "SSIM after epoch 1",
        "train loss",
        "val loss",
        "best epoch",
        "steps",
        "wall-clock s/run",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in rows]
    return "\n".join(lines)


def smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """TensorBoard's exponential moving average (debiased at the start)."""
    out, last = np.empty_like(values, dtype=float), 0.0
    for i, value in enumerate(values):
        last = weight * last + (1 - weight) * value
        out[i] = last / (1 - weight ** (i + 1))
    return out


def plot(runs: list[Run], out: Path, title: str) -> None:
    """Validation SSIM and smoothed training loss against the step, one line per run."""
    groups = group(runs)
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    seeds = sorted({run.seed for run in runs if run.seed is not None})
    styles = ["-", "--", ":", "-."]
    legend_rows = -(-len(groups) // 3)
    height = 4.6 + 0.2 * legend_rows
    fig, (ax_ssim, ax_loss) = plt.subplots(1, 2, figsize=(13, height))
    last_steps = []
    for index, (label, members) in enumerate(groups.items()):
        color = colors(index % colors.N)
        for number, run in enumerate(members):
            style = styles[(seeds.index(run.seed) if run.seed in seeds else 0) % len(styles)]
            name = label if number == 0 else None
            if "val/SSIM" in run.curves:
                steps, values = run.curves["val/SSIM"]
                ax_ssim.plot(steps, values, style, color=color, marker=".", label=name)
            if "train/loss" in run.curves:
                steps, values = run.curves["train/loss"]
                ax_loss.plot(steps, smooth(values), style, color=color, linewidth=1)
                last_steps.append(steps[-1])
    for axis, ylabel in ((ax_ssim, "validation SSIM"), (ax_loss, "training L1 loss (smoothed)")):
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if last_steps and max(last_steps) >= 4 * min(last_steps):  # e.g. batch sizes 1 and 8
            axis.set_xscale("log")
    ax_loss.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax_loss.yaxis.set_major_formatter(plain)
    ax_loss.yaxis.set_minor_formatter(plain)
    seed_note = ", ".join(f"seed {s}: '{styles[i % len(styles)]}'" for i, s in enumerate(seeds))
    fig.suptitle(f"{title}" + (f"  ({seed_note})" if len(seeds) > 1 else ""))
    fig.legend(loc="lower center", ncol=min(3, len(groups)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.2 * legend_rows + 0.15) / height, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs made with this override (repeatable), e.g. model.norm=group",
    )
    parser.add_argument("--out", type=Path, help="writes OUT.png and OUT.md")
    parser.add_argument("--title", help="plot title (default: the first folder)")
    args = parser.parse_args()

    runs = [read_run(path) for path in find_run_dirs(args.paths)]
    runs = [run for run in runs if is_training_run(run) and matches(run, args.where)]
    if not runs:
        where = f" matching {' '.join(args.where)}" if args.where else ""
        sys.exit(f"error: no training runs{where} under {' '.join(map(str, args.paths))}")
    label_runs(runs)
    out = args.out or args.paths[0] / "comparison"
    out.parent.mkdir(parents=True, exist_ok=True)
    title = args.title or str(args.paths[0])
    plot(runs, out.with_suffix(".png"), title)

    markdown = table(runs)
    total = sum(run.seconds or 0 for run in runs)
    text = (
        f"# {title}: {len(runs)} runs\n\n{markdown}\n\n"
        "Final validation metrics (after the last epoch) as mean over seeds, with the spread "
        "(max - min) in parentheses; SSIM after epoch 1 shows the early progress. Train loss: "
        "mean logged L1 loss of the last epoch (train mode); val loss: L1 after the last epoch "
        "(eval mode; a gap between them is what BatchNorm's running statistics cause). Best epoch: by "
        "validation SSIM, one per seed. Steps: optimizer steps per run. Wall-clock: "
        f"training + validation time per run (all runs: {total / 60:.1f} min).\n"
    )
    out.with_suffix(".md").write_text(text)
    print(markdown)
    print(f"\nwrote {out.with_suffix('.png')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
