"""Hydra/OmegaConf set-up shared by the command-line tools."""

import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mri_recon.errors import UserError

PROJECT_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PROJECT_DIR / "configs")

# `${project_dir:}` in configs: the checkout holding configs/, data/ and runs/, whatever the cwd.
OmegaConf.register_new_resolver("project_dir", lambda: str(PROJECT_DIR), replace=True)


def multiply(a: float, b: float) -> float:
    """`${mul:a,b}` in configs, e.g. a swept lr multiplier times an optimizer's base lr."""
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b)):
        raise ValueError(f"mul: expected two numbers, got {a!r} and {b!r}")
    return a * b


OmegaConf.register_new_resolver("mul", multiply, replace=True)


def check_overrides(config_name: str, args: list[str]) -> None:
    """Compose ``config_name`` with the command line's overrides before Hydra runs.

    An unknown key, an unknown group option or a malformed override then ends with one line
    naming it (exit status 2) instead of Hydra's multi-line report. Hydra's own flags (``-m``,
    ``--cfg``, ``--help``, ...) are left to Hydra.
    """
    if any(arg.startswith("-") for arg in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose(config_name=config_name, overrides=args, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error).split("Config search path")[0]
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        print(f"error: {' '.join(lines)}", file=sys.stderr)
        sys.exit(2)


def is_number(value: object) -> bool:
    """An int or float config value (YAML's true/false are not numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value(
    cfg: DictConfig, key: str, integer: bool, valid: Callable[[float], bool], expected: str
) -> None:
    """Raise UserError unless ``cfg.<key>`` is a number (an integer if asked) passing ``valid``."""
    try:
        value = OmegaConf.select(cfg, key)
    except OmegaConfBaseException as error:  # e.g. an interpolation that cannot be resolved
        raise UserError(f"{key}: {str(error).splitlines()[0]}") from error
    if not is_number(value) or (integer and not float(value).is_integer()) or not valid(value):
        raise UserError(f"{key}: expected {expected}, got {value!r}")
