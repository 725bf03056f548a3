"""Every fenced `mri-recon-*` command in README.md and docs/ composes its config, as the tool
would before running: a renamed key or group option fails here with the file and line of the
command, not when a user pastes it. No command is run.

Placeholders are allowed where paths go (``<run>``, ``/data/...``); a sweep (``a=1,2``) is
composed with its first value."""

import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from mri_recon.config import CONFIG_DIR, PROJECT_DIR

# The tools (console scripts, or modules under torchrun) and the config each composes.
TOOLS = {
    "mri-recon-train": "train",
    "mri-recon-eval": "eval",
    "mri-recon-data": "data_gen",
    "mri-recon-tune-tv": "tune_tv",
    "mri-recon-share": "share",
    "mri-recon-convert": "convert",
    "mri_recon.train": "train",
    "mri_recon.evaluate": "eval",
}
PAGES = [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").rglob("*.md"))]
# Configs a documented step writes before the command that uses them: composed as what they
# are made from.
GENERATED = {"baseline=tv_tuned": "baseline=tv"}  # by mri-recon-tune-tv


def fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every shell line inside ``` fences, continuations joined."""
    found, fenced, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if not fenced:
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append((start, pending + line))
        pending = ""
    return found


def tool_command(line: str) -> tuple[str, list[str]] | None:
    """(config name, arguments) of a line that runs one of TOOLS, else None."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for index, token in enumerate(tokens):
        name = Path(token).name
        if name in TOOLS and (not name.startswith("mri_recon") or tokens[index - 1] == "-m"):
            return TOOLS[name], tokens[index + 1 :]
    return None


def documented_commands(pages: list[Path]) -> list[tuple[str, str, list[str]]]:
    """(``file:line``, config name, arguments) of every fenced command in ``pages``."""
    commands = []
    for page in pages:
        for number, line in fenced_lines(page.read_text()):
            found = tool_command(line)
            if found is not None:
                shown = page.relative_to(PROJECT_DIR) if page.is_relative_to(PROJECT_DIR) else page
                where = f"{shown}:{number}"
                commands.append((where, *found))
    return commands


def single_run_overrides(args: list[str]) -> list[str]:
    """The overrides of ``args`` (Hydra's flags dropped, ``<placeholders>`` filled in), each
    sweep reduced to its first value."""
    overrides = [
        GENERATED.get(arg, arg).replace("<", "X").replace(">", "X")
        for arg in args
        if not arg.startswith("-")
    ]
    single = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            single.append(f"{override.get_key_element()}={first}")
        else:
            single.append(override.input_line)
    return single


def composition_error(config: str, args: list[str]) -> str | None:
    """Why ``config`` does not compose with ``args`` (None if it does)."""
    try:
        overrides = single_run_overrides(args)
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose(config_name=config, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        return " ".join(str(error).split("Config search path")[0].split())
    return None


def broken_commands(pages: list[Path]) -> list[str]:
    """``file:line: command: why`` for every documented command that does not compose."""
    broken = []
    for where, config, args in documented_commands(pages):
        error = composition_error(config, args)
        if error is not None:
            broken.append(f"{where}: {' '.join(args)}: {error}")
    return broken


def test_the_docs_hold_commands_to_check() -> None:
    commands = documented_commands(PAGES)
    assert len(commands) >= 20
    assert {config for _, config, _ in commands} >= {"train", "eval", "data_gen", "tune_tv"}


def test_every_documented_command_composes() -> None:
    broken = broken_commands(PAGES)
    assert not broken, "\n".join(broken)


def test_a_wrong_key_fails_with_its_file_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Train:\n\n```bash\n.venv/bin/mri-recon-train optimizer.lr=1e-3\n"
        "# a sweep, continued\n.venv/bin/mri-recon-train -m optimizer.lr=1e-3,3e-4 \\\n"
        "    trainer.max_epoch=3\n```\n"
    )
    broken = broken_commands([page])
    assert len(broken) == 1
    assert broken[0].startswith(f"{page}:6: ")  # where the continued command starts
    assert "trainer.max_epoch" in broken[0]


@pytest.mark.parametrize(
    "line, expected",
    [
        (".venv/bin/mri-recon-eval checkpoint=runs/train/<run>/checkpoints/best.pt", "eval"),
        (
            ".venv/bin/torchrun --standalone --nproc_per_node=8 -m mri_recon.train trainer=gpu",
            "train",
        ),
        ("make train TRAIN_TIME=null", None),
    ],
)
def test_commands_are_found_where_users_write_them(line: str, expected: str | None) -> None:
    found = tool_command(line)
    assert (found[0] if found else None) == expected
