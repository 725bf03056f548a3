"""`mri-recon-tune-tv`: choose the TV weight lam per acceleration on validation volumes.

Single- and multi-coil get their own values (``baseline.lam.<challenge>.<acceleration>``): the
sweep tunes those of ``data.challenge`` and keeps the others.

    mri-recon-tune-tv                                   # demo val split, writes baseline/tv_tuned
    mri-recon-tune-tv data=fastmri_knee_singlecoil data.root=/data/knee max_volumes=20
    mri-recon-eval checkpoint=... baseline=tv_tuned     # use the tuned values

For each acceleration, every lam in ``lambdas`` reconstructs the same volumes (the whole split
unless ``max_volumes``) with the same fixed masks; the lam with the best mean ``metric`` among
those that make no volume worse than zero-filled on NMSE wins. The run directory gets sweep.csv
and sweep.md with every score, and ``output`` (by default configs/baseline/tv_tuned.yaml) the
tuned config.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mri_recon.baselines.tuning import sweep, write_tuned
from mri_recon.config import CONFIG_DIR, check_overrides
from mri_recon.errors import report_user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="tune_tv")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-tune-tv`."""
    write_tuned(cfg, Path(HydraConfig.get().runtime.output_dir), sweep(cfg))


def cli() -> None:
    """The console script: checks the overrides, then runs the Hydra app."""
    check_overrides("tune_tv", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
