"""Shared fixtures: a tiny demo dataset made inside the test session (no network, tmp dirs only)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mri_recon.config import CONFIG_DIR
from mri_recon.data.demo_dataset import generate
from mri_recon.training.loop import TrainingResult, fit

TINY_DATA = [
    "image_size=32",
    "kspace_width=40",
    "acquired_columns=36",
    "num_slices=3",
    "num_coils=4",
    "volumes.train=3",
    "volumes.val=2",
    "volumes.test=2",
]


def compose_config(name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """Compose one of the project's Hydra configs as its command-line tool would (``hydra``:
    with the ``hydra`` node, e.g. the launcher)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=hydra)


def make_tiny_data(out: Path, seed: int = 0, extra: tuple[str, ...] = ()) -> list[Path]:
    """Generate the tiny dataset into ``out``; return the files written."""
    cfg = compose_config("data_gen", [f"out={out}", f"seed={seed}", *TINY_DATA, *extra])
    return generate(cfg)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fastMRI-layout dataset (32x32 targets, 3 slices a volume), shared read-only."""
    root = tmp_path_factory.mktemp("demo")
    make_tiny_data(root)
    return root


def run_cli(
    tool: str, *overrides: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run one of the installed console scripts (mri-recon-data/-train/-eval) as a user would;
    ``env`` adds environment variables."""
    executable = Path(sys.executable).parent / tool
    result = subprocess.run(
        [str(executable), *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


# Tests that start two processes: NCCL on two GPUs where the machine has them, else gloo on the
# CPU (two ranks cannot share one GPU under NCCL).
TWO_GPUS = torch.cuda.device_count() >= 2
BACKEND = "nccl" if TWO_GPUS else "gloo"


def two_process_device(key: str) -> list[str]:
    """The override that puts a two-process run where it can run (``key``: its device key)."""
    return [] if TWO_GPUS else [f"{key}=cpu"]


# Overrides that make training take seconds on the tiny dataset (configs/debug/tiny.yaml).
TINY_TRAIN = ["debug=tiny"]


def train_in_process(run_dir: Path, *overrides: str) -> TrainingResult:
    """What ``mri-recon-train hydra.run.dir=RUN_DIR OVERRIDES...`` does, in this process."""
    cfg = compose_config("train", list(overrides))
    return fit(cfg, run_dir, list(overrides))


@pytest.fixture(scope="session")
def trained_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch training run on the tiny dataset, through the real CLI."""
    run_dir = tmp_path_factory.mktemp("runs") / "train"
    run_cli(
        "mri-recon-train",
        f"data.root={tiny_root}",
        f"data.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
        "trainer.max_epochs=2",
        *TINY_TRAIN,
    )
    return run_dir
