"""`mri-recon-share`: a trained model as a weights-only file that anyone can load safely.

    mri-recon-share checkpoint=runs/train/<run>/checkpoints/best.pt out=unet.safetensors
    mri-recon-eval checkpoint=unet.safetensors          # evaluates it like the checkpoint

The .safetensors file holds the model's tensors and its training config (JSON) and nothing that
runs code when read, unlike a pickled .pt checkpoint. It cannot resume training (no optimizer or
RNG state). Writing it is mri_recon/checkpoints.py's ``write_weights_file``.
"""

import sys

import hydra
from omegaconf import DictConfig

from mri_recon.checkpoints import write_weights_file
from mri_recon.config import CONFIG_DIR, check_overrides
from mri_recon.errors import UserError, report_user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="share")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-share`."""
    if cfg.checkpoint is None or cfg.out is None:
        raise UserError(
            "expected checkpoint=PATH (a .pt of mri-recon-train) and out=FILE.safetensors"
        )
    print(f"wrote {write_weights_file(cfg.checkpoint, cfg.out)}")


def cli() -> None:
    """The `mri-recon-share` console script: checks the overrides, then runs the Hydra app."""
    check_overrides("share", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
