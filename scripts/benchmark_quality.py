"""Time to quality: ours (defaults) vs the fastMRI recipe, in fp32 and bf16, on the demo data.

    .venv/bin/python scripts/benchmark_quality.py [--root data/demo] [--budget 180] [--seeds 3]
    .venv/bin/python scripts/benchmark_quality.py --fixed-steps 1536 --seeds 2 --override model.residual=false
    .venv/bin/python scripts/benchmark_quality.py --fixed-steps 1536 --seeds 1 --first-seed 2   # seed 2 only

Both recipes scale their learning-rate schedule to the training time they are given, as a user
sets up a run, so quality is measured at the end of runs of several budgets (fractions of
``--budget`` seconds of training, data loading included, evaluation excluded), each trained
from scratch through ``mri_recon.training.step.train_step`` and evaluated once, on the demo val
split at 4x and at 8x separately with masks fixed per file (mean SSIM over volumes, fastMRI
conventions):

- ours: the default training config (GroupNorm U-Net, Adam 1e-3, warmup + cosine, clip 1.0, our
  data path), its schedule stretched over the steps the budget allows;
- fastMRI recipe: fastmri.models.Unet (InstanceNorm), UnetDataTransform (inputs clamped to +-6),
  RMSprop lr 1e-3 with its 10x lr drop at 80% of training, scaled to the budget.

Same chans, pooling layers, batch size, DataLoader workers and training masks (4x/8x mix). The
steps a budget allows are estimated from 8 timed steps of a throwaway copy of each run. One run's
final SSIM varies with its seed by a few hundredths, as much as the gaps being measured, so every
budget is run with ``--seeds`` seeds (the same for both recipes) and their mean SSIM is what
counts. The time one takes to reach a goal SSIM is the shortest budget whose mean reaches it,
linear in SSIM between that budget and the next shorter one.
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import benchmark_train
import numpy as np
import torch
from benchmark_train import as_sample, batches, train_config
from omegaconf import DictConfig, OmegaConf

from mri_recon.data.loaders import TrainingData, fixed_mask_datasets, volume_loader
from mri_recon.metrics import volume_metrics
from mri_recon.reconstruct import predict, unnormalize
from mri_recon.runtime import Runtime, cpu_has_native_bf16
from mri_recon.schedulers import Horizon, warmup_step
from mri_recon.training.loop import fit
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step

PRECISIONS = ("32", "bf16")
# Budgets of each recipe's runs, as fractions of --budget. Ours has a shorter one to resolve the
# goals (3x and 2x sooner); the recipe's half budget checks that it needs its full one.
FRACTIONS = {"ours": (1 / 3, 0.5, 1.0), "fastMRI recipe": (0.5, 1.0)}


class Recipe(NamedTuple):
    """One run: what it trains, on what data, with which clipping and input clamp."""

    state: TrainState
    loader: torch.utils.data.DataLoader
    clip: float | None
    clamp: float | None  # fastmri's UnetDataTransform clamps normalized inputs to +-6


def ours(cfg: DictConfig, runtime: Runtime, total_steps: int) -> Recipe:
    """The default config, its schedule stretched over ``total_steps`` (whole epochs)."""
    data = TrainingData(cfg, torch.device("cpu"))
    epochs = max(1, round(total_steps / len(data.train_loader)))
    cfg = OmegaConf.merge(cfg, {"trainer": {"max_epochs": epochs}})
    torch.manual_seed(cfg.seed)
    state = TrainState.create(cfg, runtime, steps_per_epoch=len(data.train_loader))
    return Recipe(state, data.train_loader, cfg.trainer.gradient_clip_val, None)


def fastmri_recipe(cfg: DictConfig, runtime: Runtime, total_steps: int) -> Recipe:
    """fastMRI's U-Net baseline at ``cfg``'s sizes, its lr drop at 80% of ``total_steps``."""
    torch.manual_seed(cfg.seed)
    state, loader = benchmark_train.fastmri_recipe(cfg, runtime)
    horizon = Horizon(total_steps)  # scheduler=step's schedule, without its warmup
    state.scheduler = warmup_step(state.optimizer, horizon, len(loader), 0.0, [0.8], 0.1)
    return Recipe(state, loader, None, 6.0)


RECIPES: dict[str, Callable[[DictConfig, Runtime, int], Recipe]] = {
    "ours": ours,
    "fastMRI recipe": fastmri_recipe,
}


@torch.no_grad()
def val_ssim(recipe: Recipe, datasets: list, runtime: Runtime) -> dict[int, float]:
    """{acceleration: mean SSIM over the val volumes} with masks fixed per file."""
    scores = {}
    for acceleration, dataset in datasets:
        values = []
        for batch in volume_loader(dataset, 0):
            images = batch.image
            if recipe.clamp is not None:
                images = images.clamp(-recipe.clamp, recipe.clamp)
            output = predict(recipe.state.model.eval(), images, runtime)
            target = unnormalize(batch.target, batch)
            values.append(volume_metrics(target, unnormalize(output, batch))["SSIM"])
        scores[acceleration] = float(np.mean(values))
    return scores


def steps_per_second(make: Callable[..., Recipe], cfg: DictConfig, runtime: Runtime) -> float:
    """Training steps per second of a throwaway copy of the run (8 steps after 3)."""
    recipe = make(cfg, runtime, 1000)
    stream = batches(recipe.loader)
    for step in range(11):
        if step == 3:
            start = time.perf_counter()
        train_step(recipe.state, as_sample(next(stream)), runtime, recipe.clip)
    return 8 / (time.perf_counter() - start)


def train_for(recipe: Recipe, runtime: Runtime, seconds: float) -> None:
    """Train until the training clock (steps only, data loading included) passes ``seconds``."""
    clock, stream = 0.0, batches(recipe.loader)
    while clock < seconds:
        start = time.perf_counter()
        train_step(recipe.state, as_sample(next(stream)), runtime, recipe.clip)
        clock += time.perf_counter() - start


class Budget(NamedTuple):
    """The runs of one budget: {acceleration: [val SSIM at the end of each seed's run]}."""

    seconds: float
    ssim: dict[int, list[float]]

    def mean(self, acceleration: int) -> float:
        return float(np.mean(self.ssim[acceleration]))

    def cells(self, accelerations: list[int]) -> str:
        """Table cells: the mean SSIM per acceleration, the runs' range in brackets."""
        return " | ".join(
            f"{self.mean(a):.4f} ({min(self.ssim[a]):.3f}-{max(self.ssim[a]):.3f})"
            for a in accelerations
        )


def budget_runs(
    make: Callable[..., Recipe],
    cfg: DictConfig,
    runtime: Runtime,
    budgets: list[float],
    datasets: list,
    seeds: range,
) -> list[Budget]:
    """One fresh run per budget and seed, each evaluated on the val ``datasets`` at its end."""
    rate = steps_per_second(make, cfg, runtime)
    runs = []
    for seconds in budgets:
        scores: dict[int, list[float]] = {acceleration: [] for acceleration, _ in datasets}
        for seed in seeds:
            recipe = make(OmegaConf.merge(cfg, {"seed": seed}), runtime, round(seconds * rate))
            train_for(recipe, runtime, seconds)
            for acceleration, ssim in val_ssim(recipe, datasets, runtime).items():
                scores[acceleration].append(ssim)
            print(f"  {seconds:.0f} s, seed {seed}: {scores}", flush=True)
        runs.append(Budget(seconds, scores))
    return runs


class Reached(NamedTuple):
    """When a goal was reached; ``at_most``: already by the shortest budget, so maybe sooner."""

    seconds: float
    at_most: bool


def time_to_reach(runs: list[Budget], acceleration: int, goal: float) -> Reached | None:
    """The shortest budget whose mean SSIM reaches ``goal`` (linear in SSIM between it and the
    next shorter budget), or None if none does."""
    previous = None
    for budget in runs:
        ssim = budget.mean(acceleration)
        if ssim >= goal:
            if previous is None:
                return Reached(budget.seconds, True)
            fraction = (goal - previous[1]) / max(ssim - previous[1], 1e-12)
            return Reached(previous[0] + fraction * (budget.seconds - previous[0]), False)
        previous = (budget.seconds, ssim)
    return None


def run(root: Path, budget: float, seeds: int) -> str:
    """The time-to-quality section of docs/benchmarks.md."""
    cfg = train_config(root)
    datasets = list(fixed_mask_datasets(cfg.data, cfg.mask, cfg.data.val_split, False))
    runs = {}
    for precision in PRECISIONS:
        runtime = Runtime.create("cpu", precision, "auto")
        for name, make in RECIPES.items():
            print(f"{name} {precision}:", flush=True)
            budgets = [budget * fraction for fraction in FRACTIONS[name]]
            runs[name, precision] = budget_runs(make, cfg, runtime, budgets, datasets, range(seeds))
    return report(runs, budget, seeds, [acceleration for acceleration, _ in datasets])


def ratio_text(theirs: Reached, mine: Reached | None) -> str:
    """'how much sooner' with its bound: >= when ours reached it at its shortest budget."""
    if mine is None:
        return "not reached"
    bound = {(False, True): ">= ", (True, False): "<= ", (True, True): "~"}.get(
        (theirs.at_most, mine.at_most), ""
    )
    return f"**{bound}{theirs.seconds / mine.seconds:.1f}x**"


def report(runs: dict, budget: float, seeds: int, accelerations: list[int]) -> str:
    """Val SSIM of every budget, and how much sooner ours reaches the recipe's full-budget SSIM."""
    lines = [
        f"Full budget {budget:.0f} s of training (data loading included, evaluation excluded); "
        f"each budget is {seeds} runs from scratch (seeds 0-{seeds - 1}), each with its schedule "
        f"scaled to the budget; val SSIM is their mean (lowest-highest run in brackets). This CPU "
        f"{'has' if cpu_has_native_bf16() else 'has no'} native bf16.",
        "",
        "| recipe | precision | budget (s) | "
        + " | ".join(f"val SSIM {a}x" for a in accelerations)
        + " |",
        "|---|---|---|" + "---|" * len(accelerations),
    ]
    for (name, precision), rows in runs.items():
        for row in rows:
            lines.append(
                f"| {name} | {precision} | {row.seconds:.0f} | {row.cells(accelerations)} |"
            )
    return "\n".join([*lines, "", speedup_table(runs, accelerations)])


def speedup_table(runs: dict, accelerations: list[int]) -> str:
    """How much sooner ours reaches the mean SSIM of the recipe's full budget."""
    lines = [
        "Time to the recipe's mean SSIM at the full budget: the shortest budget whose mean "
        "reaches it (linear in SSIM between budgets; >= : ours reached it at its shortest budget "
        "already). 'sooner' = the recipe's time / ours.",
        "",
        "| ours | recipe | acceleration | goal SSIM | recipe (s) | ours (s) | ours sooner by |",
        "|---|---|---|---|---|---|---|",
    ]
    for ours_precision, recipe_precision in (("32", "32"), ("bf16", "bf16"), ("bf16", "32")):
        recipe = runs["fastMRI recipe", recipe_precision]
        for acceleration in accelerations:
            goal = recipe[-1].mean(acceleration)
            theirs = time_to_reach(recipe, acceleration, goal)
            mine = time_to_reach(runs["ours", ours_precision], acceleration, goal)
            lines.append(
                f"| {ours_precision} | {recipe_precision} | {acceleration}x | {goal:.4f} | "
                f"{theirs.seconds:.1f} | {f'{mine.seconds:.1f}' if mine else '-'} | "
                f"{ratio_text(theirs, mine)} |"
            )
    return "\n".join(lines)


def at_make_train(root: Path, factor: float, seeds: int, cap: float = 300.0) -> str:
    """Ours for the training time of `make train` on this CPU (its trainer.max_epochs' steps at
    measured rate, at most ``cap`` s: the budget less its validations), the fastMRI recipe for
    ``factor`` times that, both in the precision ``auto`` picks; val SSIM side by side."""
    cfg = train_config(root)
    datasets = list(fixed_mask_datasets(cfg.data, cfg.mask, cfg.data.val_split, False))
    runtime = Runtime.create("cpu", "auto", "auto")
    steps = cfg.trainer.max_epochs * len(TrainingData(cfg, torch.device("cpu")).train_loader)
    seconds = min(cap, steps / steps_per_second(ours, cfg, runtime))
    lines = [
        "| recipe | precision | training (s) | "
        + " | ".join(f"val SSIM {a}x" for a, _ in datasets)
        + " |",
        "|---|---|---|" + "---|" * len(datasets),
    ]
    for name, budget in (("ours", seconds), ("fastMRI recipe", factor * seconds)):
        print(f"{name}, {budget:.0f} s:", flush=True)
        (row,) = budget_runs(RECIPES[name], cfg, runtime, [budget], datasets, range(seeds))
        precision = "bf16" if runtime.bf16 else "fp32"
        cells = row.cells([a for a, _ in datasets])
        lines.append(f"| {name} | {precision} | {budget:.0f} | {cells} |")
    return "\n".join(lines)


def fixed_steps(root: Path, steps: int, seeds: range, overrides: list[str]) -> str:
    """Ours (the training config with ``overrides``) trained for exactly ``steps`` steps per seed,
    its schedule laid over them, then val SSIM per acceleration: a comparison of settings that
    the host's speed cannot move (docs/results.md's residual and width runs)."""
    runtime = Runtime.create("cpu", "auto", "auto")
    lines = []
    for seed in seeds:
        cfg = train_config(root, [*overrides, f"seed={seed}"])
        datasets = list(fixed_mask_datasets(cfg.data, cfg.mask, cfg.data.val_split, False))
        recipe = ours(cfg, runtime, steps)
        stream = batches(recipe.loader)
        start = time.perf_counter()
        for _ in range(steps):
            train_step(recipe.state, as_sample(next(stream)), runtime, recipe.clip)
        seconds = time.perf_counter() - start
        scores = " / ".join(f"{a}x {v:.4f}" for a, v in val_ssim(recipe, datasets, runtime).items())
        lines.append(
            f"{' '.join(overrides) or 'defaults'}, seed {seed}, {steps} steps "
            f"({seconds:.0f} s): val SSIM {scores}"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def precision_quality(root: Path, epochs: int | None) -> str:
    """The default config trained for the same epochs in fp32 and in bf16: its final val metrics
    (demo val split, 4x/8x masks fixed per file) side by side."""
    rows = []
    for precision in PRECISIONS:
        cfg = train_config(root, [f"trainer.precision={precision}"])
        if epochs is not None:
            cfg.trainer.max_epochs = epochs
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            metrics = fit(cfg, Path(run_dir)).metrics
            minutes = (time.perf_counter() - start) / 60
        values = [f"{metrics[m]['mean']:.4f}" for m in ("SSIM", "PSNR", "NMSE")]
        rows.append(
            f"| {precision} | {cfg.trainer.max_epochs} | {' | '.join(values)} | {minutes:.1f} |"
        )
        print(rows[-1], flush=True)
    return "\n".join(
        [
            "| precision | epochs | val SSIM | val PSNR | val NMSE | minutes (training + validation) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per run")
    parser.add_argument("--seeds", type=int, default=3, help="runs per budget, averaged")
    parser.add_argument(
        "--at-make-train",
        type=float,
        metavar="FACTOR",
        help="instead: ours at make train's training time, the recipe at FACTOR times it",
    )
    parser.add_argument(
        "--fixed-steps",
        type=int,
        metavar="N",
        help="instead: ours for exactly N steps per seed (with --override), val SSIM per seed",
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="with --fixed-steps: seeds from this one on"
    )
    parser.add_argument("--override", nargs="*", default=[], help="training config overrides")
    args = parser.parse_args()
    if args.fixed_steps:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        fixed_steps(args.root.resolve(), args.fixed_steps, seeds, args.override)
    elif args.at_make_train:
        print(at_make_train(args.root.resolve(), args.at_make_train, args.seeds))
    else:
        print(run(args.root.resolve(), args.budget, args.seeds))


if __name__ == "__main__":
    main()
