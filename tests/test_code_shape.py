"""The shape the code keeps: short functions, few parameters, entry modules imported by nothing."""

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
ENTRY_MODULES = {
    "mri_recon.train",
    "mri_recon.evaluate",
    "mri_recon.tune_tv",
    "mri_recon.convert",
    "mri_recon.share",
    "mri_recon.data.generate",
}
MAX_LINES, MAX_PARAMETERS = 60, 6


def functions(path: Path) -> list[tuple[str, ast.FunctionDef]]:
    """(qualified name, node) of every function and method in ``path``."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            found.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            found += [
                (f"{node.name}.{item.name}", item)
                for item in ast.walk(node)
                if isinstance(item, ast.FunctionDef)
            ]
    return found


def hydra_constructors() -> set[str]:
    """``module.Class.__init__`` / ``module.function`` of every ``_target_`` in configs/: their
    parameters are config keys, so they may take more than MAX_PARAMETERS."""
    targets = set()
    for path in (PROJECT / "configs").rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.strip().startswith("_target_: mri_recon."):
                target = line.split(":", 1)[1].split("#")[0].strip()
                targets |= {target, f"{target}.__init__"}
    return targets


def library_files() -> list[Path]:
    return sorted((PROJECT / "mri_recon").rglob("*.py"))


def test_functions_are_short_and_take_few_parameters() -> None:
    too_long, too_many = [], []
    for path in library_files():
        module = ".".join(path.relative_to(PROJECT).with_suffix("").parts)
        for name, function in functions(path):
            where = f"{path.relative_to(PROJECT)}:{function.lineno} {name}"
            lines = function.end_lineno - function.lineno + 1
            if lines > MAX_LINES:
                too_long.append(f"{where} ({lines} lines)")
            arguments = function.args
            names = [
                a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            ]
            exempt = f"{module}.{name}" in hydra_constructors()
            if len([n for n in names if n not in ("self", "cls")]) > MAX_PARAMETERS and not exempt:
                too_many.append(where)
    assert not too_long + too_many, (too_long, too_many)


@pytest.mark.parametrize("folder", ["mri_recon", "scripts"])
def test_nothing_imports_an_entry_module(folder: str) -> None:
    offenders = []
    for path in sorted((PROJECT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ENTRY_MODULES:
                offenders.append(f"{path.relative_to(PROJECT)}: from {node.module}")
            if isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(PROJECT)}: import {alias.name}"
                    for alias in node.names
                    if alias.name in ENTRY_MODULES
                ]
    assert not offenders, offenders
