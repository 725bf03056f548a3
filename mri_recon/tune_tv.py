"""`mri-recon-tune-tv`: choose the TV weight lam per acceleration on validation volumes.

Single- and multi-coil get their own values (``baseline.lam.<challenge>.<acceleration>``): the
sweep tunes those of ``data.challenge`` and keeps the others.

    mri-recon-tune-tv                                   # demo val split, writes baseline/tv_tuned
    mri-recon-tune-tv data=fastmri_knee_singlecoil data.root=/data/knee max_volumes=20
    mri-recon-eval checkpoint=... baseline=tv_tuned     # use the tuned values

For each acceleration, every lam in ``lambdas`` reconstructs the same volumes with the same fixed
masks; the lam with the best mean ``metric`` wins. The run directory gets sweep.csv with every
score, and ``output`` (by default configs/baseline/tv_tuned.yaml) the tuned config.
"""

import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from mri_recon.config import CONFIG_DIR, check_overrides
from mri_recon.data.loaders import fixed_mask_datasets
from mri_recon.errors import UserError, report_user_errors
from mri_recon.evaluate import tv_settings, tv_volume, volume_loader
from mri_recon.metrics import METRICS, volume_metrics
from mri_recon.reconstruct import unnormalize
from mri_recon.train import select_device

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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="tune_tv")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-tune-tv`."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    scores = sweep(cfg)
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


def cli() -> None:
    """The console script: checks the overrides, then runs the Hydra app."""
    check_overrides("tune_tv", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
