"""Shared fixtures: a tiny demo dataset made inside the test session (no network, tmp dirs only)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mri_recon.config import CONFIG_DIR
from mri_recon.data.generate import generate

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


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose one of the project's Hydra configs as its command-line tool would."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


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
