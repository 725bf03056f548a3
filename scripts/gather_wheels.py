"""`make wheels`: every dependency but PyTorch, as wheels, for a machine without internet.

    make wheels                                   # wheels/ for this Python
    make wheels WHEELS_OUT=DIR WHEELS_PYTHON=3.12 # for another Python (binary wheels fetched
                                                  # for it; pure-Python sdists built here)
    make install WHEELS=DIR                       # there: .venv on top of its own PyTorch

The versions are the ones this project's .venv holds (what the suite ran with), minus PyTorch
and what comes with it (torch, torchvision, triton, the nvidia-* CUDA libraries): a GPU server
keeps the PyTorch built for its driver. setuptools is added for the editable install.
"""

import argparse
import subprocess
import sys
from pathlib import Path

# What the GPU machine's own PyTorch brings (and what a CPU wheel of it would wrongly replace).
PYTORCH = ("torch", "torchvision", "torchaudio", "triton", "nvidia-")
LINUX = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def requirements() -> list[str]:
    """``name==version`` of every package in this environment but PyTorch's."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    keep = [line for line in frozen if "==" in line and not line.lower().startswith(PYTORCH)]
    return [*keep, "setuptools"]


def fetch(requirement: str, out: Path, python: str | None) -> None:
    """One package's wheel into ``out``: a binary wheel for ``python`` (None: this Python)
    where one exists, else built here (a pure-Python sdist builds for every Python)."""
    pip = [sys.executable, "-m", "pip", "--quiet"]
    if python is not None:
        platforms = [flag for tag in LINUX for flag in ("--platform", tag)]
        binary = ["download", "--no-deps", "--only-binary=:all:", "--python-version", python]
        done = subprocess.run([*pip, *binary, *platforms, "-d", str(out), requirement])
        if done.returncode == 0:
            return
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(out), requirement], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("wheels"))
    parser.add_argument("--python", default=None, help="target Python, e.g. 3.12 (default: this)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = requirements()
    if args.python is None:  # one call: pip takes binary wheels as they are, builds the sdists
        pip = [sys.executable, "-m", "pip", "--quiet", "wheel", "--no-deps"]
        subprocess.run([*pip, "-w", str(args.out), *wanted], check=True)
    else:
        for requirement in wanted:
            fetch(requirement, args.out, args.python)
    print(f"{len(list(args.out.glob('*.whl')))} wheels in {args.out}")


if __name__ == "__main__":
    main()
