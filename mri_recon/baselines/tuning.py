"""Choosing the TV weight lam per acceleration on validation volumes (`mri-recon-tune-tv`).

For each acceleration every lam reconstructs every volume of the split (``max_volumes``: the
first N) with the same fixed masks and coil maps (estimated once per volume for every lam). The
chosen lam has the best mean ``metric`` among those with no volume worse than zero-filled on
NMSE (a baseline that makes some volume worse than doing nothing is not a baseline); if every
lam makes one worse, the best overall, with a warning.
"""

import csv
import logging
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from mri_recon.baselines.tv import check_baseline, tv_settings, tv_volume_lambdas
from mri_recon.config import CONFIG_DIR
from mri_recon.data.loaders import fixed_mask_datasets, volume_loader
from mri_recon.errors import UserError
from mri_recon.metrics import METRICS, volume_metrics
from mri_recon.reconstruct import unnormalize
from mri_recon.runtime import select_device

log = logging.getLogger(__name__)


class LamScore(NamedTuple):
    """One lam at one acceleration: the mean of each metric over the volumes, the volumes it
    made worse than zero-filled on NMSE, and its coil-map method (multi-coil)."""

    means: dict[str, float]
    worse: list[str]
    maps: str


def sweep(cfg: DictConfig) -> dict[str, dict[float, LamScore]]:
    """{acceleration: {lam: LamScore}}."""
    if cfg.metric not in METRICS:
        raise UserError(f"metric: expected one of {list(METRICS)}, got {cfg.metric!r}")
    check_baseline(cfg)
    device = select_device(cfg.device)
    scores: dict[str, dict[float, LamScore]] = {}
    for acceleration, dataset in fixed_mask_datasets(cfg.data, cfg.mask, cfg.split, True):
        values: dict[float, list[dict[str, float]]] = defaultdict(list)
        worse: dict[float, list[str]] = defaultdict(list)
        maps = "none"
        loader = volume_loader(dataset, 0)
        for index, batch in enumerate(tqdm(loader, desc=f"{acceleration}x", unit="volume")):
            if cfg.max_volumes is not None and index >= cfg.max_volumes:
                break
            target = unnormalize(batch.target, batch)
            zero_filled = volume_metrics(target, unnormalize(batch.image, batch))["NMSE"]
            lambdas = [float(lam) for lam in cfg.lambdas]
            settings = tv_settings(cfg.baseline, cfg.data.challenge, acceleration, lambdas[0])
            results = tv_volume_lambdas(batch, settings, lambdas, device, cfg.baseline.batch_size)
            for lam, result in zip(lambdas, results, strict=True):
                metrics = volume_metrics(target, result.images.numpy())
                values[lam].append(metrics)
                if metrics["NMSE"] > zero_filled:
                    worse[lam].append(batch.fname[0])
                maps = result.maps
        scores[str(acceleration)] = {
            lam: LamScore(
                {m: float(np.mean([v[m] for v in runs])) for m in METRICS}, worse[lam], maps
            )
            for lam, runs in values.items()
        }
    return scores


def choose(by_lam: dict[float, LamScore], metric: str) -> float:
    """The best lam by mean ``metric`` among those that make no volume worse than zero-filled
    (all of them if none qualifies)."""
    allowed = {lam: score for lam, score in by_lam.items() if not score.worse} or by_lam
    pick = min if metric == "NMSE" else max
    return pick(allowed, key=lambda lam: allowed[lam].means[metric])


def sweep_table(scores: dict[str, dict[float, LamScore]], best: dict[str, float]) -> list[str]:
    """The sweep as markdown rows, the chosen lam marked."""
    lines = ["| acceleration | lam | NMSE | PSNR | SSIM | volumes worse than zero-filled (NMSE) |"]
    lines.append("|---|---|---|---|---|---|")
    for acceleration, by_lam in scores.items():
        for lam, score in by_lam.items():
            chosen = " **chosen**" if lam == best[acceleration] else ""
            cells = " | ".join(f"{score.means[m]:.4f}" for m in ("NMSE", "PSNR", "SSIM"))
            worse = ", ".join(score.worse) or "none"
            lines.append(f"| {acceleration}x | {lam:g}{chosen} | {cells} | {worse} |")
    return lines


def write_tuned(cfg: DictConfig, run_dir: Path, scores: dict[str, dict[float, LamScore]]) -> None:
    """sweep.csv and sweep.md (every score) in ``run_dir``, and the tuned baseline config at
    ``cfg.output``."""
    best = {acc: choose(by_lam, cfg.metric) for acc, by_lam in scores.items()}
    with open(run_dir / "sweep.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["acceleration", "lam", *METRICS, "worse_than_zero_filled", "maps"])
        for acceleration, by_lam in scores.items():
            for lam, score in by_lam.items():
                row = [score.means[m] for m in METRICS]
                writer.writerow([acceleration, lam, *row, len(score.worse), score.maps])
    table = sweep_table(scores, best)
    (run_dir / "sweep.md").write_text("\n".join(table) + "\n")
    for line in table[2:]:
        log.info("%s", line)
    for acceleration, lam in best.items():
        if scores[acceleration][lam].worse:
            log.warning(
                "%sx: every lam makes some volume worse than zero-filled on NMSE; lam %g has the "
                "best mean %s",
                acceleration,
                lam,
                cfg.metric,
            )
    write_config(cfg, run_dir, best)


def write_config(cfg: DictConfig, run_dir: Path, best: dict[str, float]) -> None:
    """The tuned baseline config at ``cfg.output``, its origin in its header."""
    tuned = OmegaConf.merge(cfg.baseline, {"lam": {cfg.data.challenge: dict(best)}})
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Tuned by mri-recon-tune-tv on {cfg.data.root} ({cfg.data.challenge}, split {cfg.split}),\n"
        f"# best mean {cfg.metric} over lambdas {list(cfg.lambdas)} with no volume worse than\n"
        f"# zero-filled on NMSE; scores in {run_dir / 'sweep.md'}.\n"
    )
    output.write_text(header + OmegaConf.to_yaml(tuned))
    if output.parent.resolve() == Path(CONFIG_DIR, "baseline").resolve():
        print(f"wrote {output}: use it with `mri-recon-eval baseline={output.stem}`")
    else:
        print(f"wrote {output}: copy it into configs/baseline/ to use it as baseline={output.stem}")
