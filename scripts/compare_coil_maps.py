"""Coil maps for the multi-coil TV baseline, compared on the demo's val split without solving.

    .venv/bin/python scripts/compare_coil_maps.py [--methods walsh,center_lines,espirit]

For each acceleration (fastMRI's center fractions: 4x 0.08, 8x 0.04 of the columns) and each
method of ``mri_recon.baselines.coil_maps``: the maps' error against the maps of each slice's
fully sampled k-space (its coil images over their root-sum-of-squares), weighted by the RSS image
squared inside the target crop (the VarNet study's ``span`` measure), the share of the coil
combination's energy off the positive real axis, and the seconds per slice. Prints a markdown
table for docs/results.md.
"""

import argparse
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from study_varnet_maps import map_scores

from mri_recon.baselines.coil_maps import MapSettings, center_window, estimate_maps
from mri_recon.config import PROJECT_DIR

CENTER_FRACTIONS = {4: 0.08, 8: 0.04}


def volumes(root: Path) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(k-space (S, C, H, W), RSS target (S, h, w)) of every multi-coil val volume."""
    found = []
    for path in sorted((root / "multicoil_val").glob("*.h5")):
        with h5py.File(path) as file:
            found.append((torch.from_numpy(file["kspace"][()]), file["reconstruction_rss"][()]))
    return found


def row(data: list, acceleration: int, method: str) -> str:
    """One table row: the method's map error, off-axis energy and seconds per slice."""
    scores, seconds, slices = [], 0.0, 0
    for kspace, target in data:
        count = round(kspace.shape[-1] * CENTER_FRACTIONS[acceleration])
        mask = center_window(kspace.shape[-1], count, kspace.device).expand(len(kspace), -1)
        start = time.perf_counter()
        maps, _, used = estimate_maps(kspace * mask[:, None, None, :], mask, MapSettings(method))
        seconds, slices = seconds + time.perf_counter() - start, slices + len(kspace)
        scores.append(map_scores(kspace, target, maps))
    error, weight, off_axis, energy = np.array(scores)[:, :4].sum(axis=0)
    return (
        f"| {acceleration}x ({count} center columns) | {used} | {error / weight:.4f} | "
        f"{100 * off_axis / energy:.2f}% | {seconds / slices:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / "data" / "demo")
    parser.add_argument("--methods", default="walsh,center_lines,espirit")
    args = parser.parse_args()
    data = volumes(args.root)
    print("| acceleration | maps | error vs fully sampled maps | off the real axis | s/slice |")
    print("|---|---|---|---|---|")
    for acceleration in CENTER_FRACTIONS:
        for method in args.methods.split(","):
            print(row(data, acceleration, method), flush=True)


if __name__ == "__main__":
    main()
