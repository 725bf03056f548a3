"""`mri-recon-share`: a trained model as a weights-only file that anyone can load safely.

    mri-recon-share checkpoint=runs/train/<run>/checkpoints/best.pt out=unet.safetensors
    mri-recon-eval checkpoint=unet.safetensors          # evaluates it like the checkpoint
    mri-recon-share fastmri_varnet=knee_leaderboard_state_dict.pt out=varnet_knee.safetensors

The .safetensors file holds the model's tensors and its training config (JSON) and nothing that
runs code when read, unlike a pickled .pt checkpoint. It cannot resume training (no optimizer or
RNG state). Writing it is mri_recon/checkpoints.py's ``write_weights_file``; with
``fastmri_varnet`` a fastmri.models.VarNet state dict (fastMRI's published models too) becomes
such a file (``import_fastmri_varnet``), to evaluate beside our own models.
"""

import sys

import hydra
from hydra import compose
from omegaconf import DictConfig

from mri_recon.checkpoints import import_fastmri_varnet, write_weights_file
from mri_recon.config import CONFIG_DIR, check_overrides
from mri_recon.errors import UserError, report_user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="share")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-share`."""
    if (cfg.checkpoint is None) == (cfg.fastmri_varnet is None) or cfg.out is None:
        raise UserError(
            "expected checkpoint=PATH (a .pt of mri-recon-train) or fastmri_varnet=PATH (a "
            "fastmri.models.VarNet state dict), and out=FILE.safetensors"
        )
    if cfg.checkpoint is not None:
        print(f"wrote {write_weights_file(cfg.checkpoint, cfg.out)}")
        return
    varnet_cfg = compose(config_name="train", overrides=["model=varnet"])
    print(f"wrote {import_fastmri_varnet(cfg.fastmri_varnet, cfg.out, varnet_cfg)}")


def cli() -> None:
    """The `mri-recon-share` console script: checks the overrides, then runs the Hydra app."""
    check_overrides("share", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
