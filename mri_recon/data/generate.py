"""`mri-recon-data`: write the demo dataset in the exact fastMRI layout.

    mri-recon-data                      # data/demo/{singlecoil,multicoil}_{train,val,test}/
    mri-recon-data out=/tmp/demo seed=3 volumes.train=40 snr=20
    mri-recon-data size=release         # 640x368 k-space, 320x320 targets, 15 coils

The same seed gives byte-identical files.
"""

import sys

import hydra
from omegaconf import DictConfig

from mri_recon.config import CONFIG_DIR, check_overrides
from mri_recon.data.demo_dataset import generate
from mri_recon.errors import report_user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data_gen")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-data`."""
    files = generate(cfg)
    print(f"wrote {len(files)} files to {cfg.out}")


def cli() -> None:
    """The `mri-recon-data` console script: checks the overrides, then runs the Hydra app."""
    check_overrides("data_gen", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
