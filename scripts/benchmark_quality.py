"""Time to quality: ours (defaults) vs the fastMRI recipe, in fp32 and bf16, on the demo data.

    .venv/bin/python scripts/benchmark_quality.py [--root data/demo] [--budget 180]

Each of the four runs trains for the same wall-clock budget (data loading included, evaluation
excluded) through ``mri_recon.training.step.train_step`` and is evaluated at 12 evenly spaced
points of its training clock on the demo val split, at 4x and at 8x separately, with masks fixed
per file (mean SSIM over volumes, fastMRI conventions):

- ours: the default training config (GroupNorm U-Net, Adam 1e-3, warmup + cosine, clip 1.0, our
  data path), its schedule stretched over the steps the budget allows;
- fastMRI recipe: fastmri.models.Unet (InstanceNorm), UnetDataTransform (inputs clamped to +-6),
  RMSprop lr 1e-3 with its 10x lr drop at 80% of training, scaled to the budget.

Same chans, pooling layers, batch size, DataLoader workers and training masks (4x/8x mix). The
steps a budget allows are estimated from 8 timed steps of a throwaway copy of each run.
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
from benchmark_train import as_images, batches, train_config
from omegaconf import DictConfig, OmegaConf

from mri_recon.data.loaders import TrainingData, fixed_mask_datasets, volume_loader
from mri_recon.metrics import volume_metrics
from mri_recon.reconstruct import predict, unnormalize
from mri_recon.runtime import Runtime, cpu_has_native_bf16
from mri_recon.training.loop import fit
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step

EVALUATIONS = 12
PRECISIONS = ("32", "bf16")


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
    drop = round(0.8 * total_steps)
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(
        state.optimizer, lambda step: 1.0 if step < drop else 0.1
    )
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
        train_step(recipe.state, *as_images(next(stream)), runtime, recipe.clip)
    return 8 / (time.perf_counter() - start)


def train_for_budget(
    recipe: Recipe, runtime: Runtime, budget: float, datasets: list
) -> list[tuple[float, dict[int, float]]]:
    """[(training seconds, {acceleration: val SSIM})] at the first step past each of 12 evenly
    spaced points of the budget (fewer if one step spans several)."""
    points = iter(budget * (i + 1) / EVALUATIONS for i in range(EVALUATIONS))
    curve, clock, next_point = [], 0.0, next(points)
    stream = batches(recipe.loader)
    while next_point is not None:
        start = time.perf_counter()
        train_step(recipe.state, *as_images(next(stream)), runtime, recipe.clip)
        clock += time.perf_counter() - start
        if clock >= next_point:
            curve.append((clock, val_ssim(recipe, datasets, runtime)))
            while next_point is not None and next_point <= clock:  # one evaluation per step
                next_point = next(points, None)
    return curve


def time_to_reach(curve: list[tuple[float, dict[int, float]]], acceleration: int, goal: float):
    """Training seconds from which val SSIM stays at or above ``goal`` for the rest of the budget
    (linear between the last evaluation below it and the next), or None if the last one is below.

    A curve that touches the goal once and falls back has not reached it: a noisy run cannot win by
    a lucky evaluation, and the rule is the same for both recipes.
    """
    below = [i for i, (_, scores) in enumerate(curve) if scores[acceleration] < goal]
    if below and below[-1] == len(curve) - 1:
        return None
    previous_time, previous_ssim = curve[below[-1]] if below else (0.0, {acceleration: 0.0})
    seconds, scores = curve[below[-1] + 1 if below else 0]
    previous_ssim, ssim = previous_ssim[acceleration], scores[acceleration]
    fraction = (goal - previous_ssim) / max(ssim - previous_ssim, 1e-12)
    return previous_time + fraction * (seconds - previous_time)


def run(root: Path, budget: float) -> str:
    """The time-to-quality section of docs/benchmarks.md."""
    cfg = train_config(root)
    datasets = list(fixed_mask_datasets(cfg.data, cfg.mask, cfg.data.val_split, False))
    curves = {}
    for precision in PRECISIONS:
        runtime = Runtime.create("cpu", precision, "auto")
        for name, make in RECIPES.items():
            total_steps = round(budget * steps_per_second(make, cfg, runtime))
            recipe = make(cfg, runtime, total_steps)
            curves[name, precision] = train_for_budget(recipe, runtime, budget, datasets)
            print(f"{name} {precision}: {curves[name, precision][-1]}", flush=True)
    return report(curves, budget, [acceleration for acceleration, _ in datasets])


def report(curves: dict, budget: float, accelerations: list[int]) -> str:
    """Val SSIM at the budget, and how much sooner ours reaches the recipe's final SSIM."""
    lines = [
        f"Budget {budget:.0f} s of training per run (data loading included, evaluation "
        f"excluded), evaluated at up to {EVALUATIONS} points of it. This CPU "
        f"{'has' if cpu_has_native_bf16() else 'has no'} native bf16.",
        "",
        "| recipe | precision | "
        + " | ".join(f"val SSIM {a}x at budget" for a in accelerations)
        + " |",
        "|---|---|" + "---|" * len(accelerations),
    ]
    for (name, precision), curve in curves.items():
        final = " | ".join(f"{curve[-1][1][a]:.4f}" for a in accelerations)
        lines.append(f"| {name} | {precision} | {final} |")
    lines += [
        "",
        "Time to the recipe's SSIM at the budget (seconds of training after which val SSIM "
        "stays at or above it; linear between evaluations). 'sooner' = the recipe's time / ours.",
        "",
        "| ours | recipe | acceleration | goal SSIM | recipe (s) | ours (s) | ours sooner by |",
        "|---|---|---|---|---|---|---|",
    ]
    for ours_precision, recipe_precision in (("32", "32"), ("bf16", "bf16"), ("bf16", "32")):
        recipe = curves["fastMRI recipe", recipe_precision]
        for acceleration in accelerations:
            goal = recipe[-1][1][acceleration]
            theirs = time_to_reach(recipe, acceleration, goal)
            mine = time_to_reach(curves["ours", ours_precision], acceleration, goal)
            ratio = f"**{theirs / mine:.1f}x**" if mine else "not reached"
            lines.append(
                f"| {ours_precision} | {recipe_precision} | {acceleration}x | {goal:.4f} | "
                f"{theirs:.1f} | {f'{mine:.1f}' if mine else '-'} | {ratio} |"
            )
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
    args = parser.parse_args()
    print(run(args.root.resolve(), args.budget))


if __name__ == "__main__":
    main()
