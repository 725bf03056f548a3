"""Choosing the TV weight lam per acceleration on validation volumes (`mri-recon-tune-tv`)."""

import csv
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from mri_recon.baselines.tv import tv_settings, tv_volume
from mri_recon.config import CONFIG_DIR
from mri_recon.data.loaders import fixed_mask_datasets, volume_loader
from mri_recon.errors import UserError
from mri_recon.metrics import METRICS, volume_metrics
from mri_recon.reconstruct import unnormalize
from mri_recon.runtime import select_device

log = logging.getLogger(__name__)


def sweep(cfg: DictConfig) -> dict[str, dict[float, float]]:
    """{acceleration: {lam: mean metric over volumes}}."""
    if cfg.metric not in METRICS:
        raise UserError(f"metric: expected one of {list(METRICS)}, got {cfg.metric!r}")
    device = select_device(cfg.device)
    scores: dict[str, dict[float, float]] = {}
    for acceleration, dataset in fixed_mask_datasets(cfg.data, cfg.mask, cfg.split, True):
        values: dict[float, list[float]] = defaultdict(list)
        for index, batch in enumerate(
            tqdm(volume_loader(dataset, 0), desc=f"{acceleration}x", unit="volume")
        ):
            if cfg.max_volumes is not None and index >= cfg.max_volumes:
                break
            target = unnormalize(batch.target, batch)
            for lam in cfg.lambdas:
                settings = tv_settings(cfg.baseline, cfg.data.challenge, acceleration, float(lam))
                recon = tv_volume(batch, settings, device, cfg.baseline.batch_size)
                values[float(lam)].append(volume_metrics(target, recon)[cfg.metric])
        scores[str(acceleration)] = {lam: float(np.mean(v)) for lam, v in values.items()}
    return scores


def write_tuned(cfg: DictConfig, run_dir: Path, scores: dict[str, dict[float, float]]) -> None:
    """sweep.csv (every score) in ``run_dir``, and the tuned baseline config at ``cfg.output``."""
    pick = min if cfg.metric == "NMSE" else max
    best = {acc: pick(by_lam, key=by_lam.get) for acc, by_lam in scores.items()}
    with open(run_dir / "sweep.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["acceleration", "lam", cfg.metric])
        for acceleration, by_lam in scores.items():
            for lam, value in by_lam.items():
                writer.writerow([acceleration, lam, value])
                log.info(
                    "%sx lam %-8g %s %.4f%s",
                    acceleration,
                    lam,
                    cfg.metric,
                    value,
                    "  <- best" if lam == best[acceleration] else "",
                )
    tuned = OmegaConf.merge(cfg.baseline, {"lam": {cfg.data.challenge: dict(best)}})
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Tuned by mri-recon-tune-tv on {cfg.data.root} ({cfg.data.challenge}, split {cfg.split}),\n"
        f"# best mean {cfg.metric} over lambdas {list(cfg.lambdas)}; scores in {run_dir / 'sweep.csv'}.\n"
    )
    output.write_text(header + OmegaConf.to_yaml(tuned))
    if output.parent.resolve() == Path(CONFIG_DIR, "baseline").resolve():
        print(f"wrote {output}: use it with `mri-recon-eval baseline={output.stem}`")
    else:
        print(f"wrote {output}: copy it into configs/baseline/ to use it as baseline={output.stem}")
