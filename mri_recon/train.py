"""`mri-recon-train`: train the U-Net on zero-filled -> fully sampled slices.

    mri-recon-train                                   # demo data, GroupNorm U-Net, Adam
    mri-recon-train optimizer.lr=3e-4 model.chans=64 mask=random_8x data.root=/data/knee
    mri-recon-train -m optimizer.lr=1e-3,3e-4         # a Hydra sweep
    mri-recon-train hydra.run.dir=runs/train/X trainer.resume=true   # continue run X
    mri-recon-train -m hydra/launcher=slurm trainer.resume=auto ...  # Slurm jobs (README)
    mri-recon-train debug=tiny                        # seconds-long run with tiny sizes

The run directory holds .hydra/ (resolved config), TensorBoard events, checkpoints/last.pt and
best.pt (by validation SSIM), train.log and metrics.json (final validation metrics). The loop
itself is mri_recon/training/loop.py.
"""

import logging
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mri_recon import distributed
from mri_recon.config import CONFIG_DIR, PROJECT_DIR, check_overrides
from mri_recon.errors import report_user_errors
from mri_recon.training.loop import TrainingDiverged, fit
from mri_recon.training.run_lock import command_line_run_dir, run_lock

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point of `mri-recon-train`; returns the final validation SSIM (for sweeps).

    A stop signal (SIGTERM, SIGINT, SIGUSR1/2) ends the process with status 128 + its number
    after the checkpoint; under Submitit its own handler then requeues the job.
    """
    distributed.adopt_submitit_environment()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        result = fit(cfg, run_dir, list(hydra_cfg.overrides.task))
    except TrainingDiverged as error:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        # In a sweep a diverged setting is a result (metrics.json says so): go on with the next job.
        log.error("%s", error)
        return None
    if result.stopped_by is not None:
        handler = signal.getsignal(result.stopped_by)  # what handled it before training
        if callable(handler) and handler is not signal.default_int_handler:
            handler(result.stopped_by, None)  # Submitit: requeue; the job resumes from last.pt
        sys.exit(128 + result.stopped_by)
    return result.metrics["SSIM"]["mean"] if result.metrics else None


@report_user_errors
def cli() -> None:
    """The `mri-recon-train` console script: checks the overrides, holds the run directory the
    command line names (one writer per directory), then runs the Hydra app."""
    sys.argv += distributed.hydra_overrides(sys.argv[1:], "train", str(PROJECT_DIR))
    check_overrides("train", sys.argv[1:])
    run_dir = command_line_run_dir(sys.argv[1:])
    with run_lock(run_dir) if run_dir is not None else nullcontext():
        main()


if __name__ == "__main__":
    cli()
