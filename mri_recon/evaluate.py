"""`mri-recon-eval`: zero-filled, TV and U-Net side by side with the fastMRI metrics.

    mri-recon-eval checkpoint=runs/train/<run>/checkpoints/best.pt
    mri-recon-eval checkpoint=... split=test save_reconstructions=true   # submission files
    mri-recon-eval method=[zero_filled,tv]                               # no checkpoint needed

Writes into its run directory: metrics.json, per_volume.csv, report.md, figure.png (also logged to
TensorBoard) and, with save_reconstructions=true, reconstructions/<method>/<acceleration>/<file>
holding dataset ``reconstruction`` (slices, H, W) as fastMRI submissions do. Masks are fixed per
file, so evaluating a checkpoint twice gives identical numbers. Test/challenge folders (no targets)
are reconstructed with their stored masks and only the files are written. The evaluation itself
is mri_recon/evaluation/run.py.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mri_recon import distributed
from mri_recon.config import CONFIG_DIR, PROJECT_DIR, check_overrides
from mri_recon.errors import report_user_errors
from mri_recon.evaluation.run import evaluate


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-eval`."""
    distributed.adopt_submitit_environment()
    hydra_cfg = HydraConfig.get()
    evaluate(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))


def cli() -> None:
    """The console script: checks the overrides, then runs the Hydra app."""
    sys.argv += distributed.hydra_overrides(sys.argv[1:], "eval", str(PROJECT_DIR))
    check_overrides("eval", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
