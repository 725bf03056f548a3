"""Hydra/OmegaConf set-up shared by the command-line tools."""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_DIR / "configs")

# `${project_dir:}` in configs: the checkout holding configs/, data/ and runs/, whatever the cwd.
OmegaConf.register_new_resolver("project_dir", lambda: str(PROJECT_DIR), replace=True)
