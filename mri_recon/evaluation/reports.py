"""Evaluation outputs: submission files, metrics.json, per_volume.csv, report.md, the figure."""

import csv
import json
from pathlib import Path
from typing import Any

import h5py
import matplotlib
import numpy as np
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from mri_recon.evaluation.consistency import consistency_notes
from mri_recon.evaluation.methods import checkpoint_list
from mri_recon.files import atomic_path
from mri_recon.metrics import METRICS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_volume(path: Path, volume: np.ndarray) -> None:
    """A fastMRI submission file: dataset ``reconstruction`` (slices, H, W), written atomically."""
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=volume)


def write_report(
    run_dir: Path,
    results: dict[str, Any],
    rows: list[dict[str, Any]],
    cfg: DictConfig,
    tv_notes: dict[str, dict[str, Any]] | None = None,
    models: dict[str, str] | None = None,
) -> None:
    """metrics.json, per_volume.csv and report.md; ``tv_notes``: per acceleration, TV's coil
    maps and the slices its guard replaced by their zero-filled image (``tv`` in metrics.json);
    ``models``: each learned method's checkpoint, {method name: path}; the ``_dc`` methods'
    weight and steps per acceleration (``consistency`` in metrics.json)."""
    volumes = {row["file"] for row in rows}
    summary = {
        "split": cfg.split,
        "num_volumes": len(volumes),
        "checkpoints": checkpoint_list(cfg.checkpoint),
        "models": models or {},
        "results": results,
    }
    if tv_notes:
        summary["tv"] = tv_notes
    consistency = consistency_notes(cfg, results)
    if consistency:
        summary["consistency"] = consistency
    with atomic_path(run_dir / "metrics.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
    with open(run_dir / "per_volume.csv", "w", newline="") as file:
        writer = csv.DictWriter(
            file, fieldnames=["file", "acceleration", "method", "slices", *METRICS]
        )
        writer.writeheader()
        writer.writerows(rows)
    (run_dir / "report.md").write_text(report_markdown(summary))


def report_markdown(summary: dict[str, Any]) -> str:
    """report.md's text from what metrics.json holds (``write_report``'s summary): the
    checkpoints, one table per acceleration, TV's and data consistency's notes under it."""
    lines = [f"# Evaluation on `{summary['split']}` ({summary['num_volumes']} volumes)", ""]
    if summary["models"]:
        named = ", ".join(f"{name} `{path}`" for name, path in summary["models"].items())
        lines += [f"Checkpoints: {named}", ""]
    tv_notes, consistency = summary.get("tv", {}), summary.get("consistency", {})
    for acceleration, by_method in summary["results"].items():
        lines += [
            f"## {acceleration}x",
            "",
            "| method | NMSE | PSNR (dB) | SSIM | seconds/slice |",
            "|---|---|---|---|---|",
        ]
        for method, values in by_method.items():
            cells = [f"{values[m]['mean']:.4f} ± {values[m]['std']:.4f}" for m in METRICS]
            lines.append(f"| {method} | {' | '.join(cells)} | {values['seconds_per_slice']:.4f} |")
        lines.append("")
        if acceleration in tv_notes:
            note = tv_notes[acceleration]
            replaced = ", ".join(note["replaced_slices"]) or "none"
            lines += [
                f"TV coil maps: {note['coil_maps']}; slices its guard replaced by their "
                f"zero-filled image: {replaced}.",
                "",
            ]
        if acceleration in consistency:
            note = consistency[acceleration]
            lines += [
                f"Data consistency (`_dc`): weight {note['weight']:g}, {note['iterations']} "
                "conjugate-gradient steps, TV's coil maps.",
                "",
            ]
    return "\n".join(lines)


def make_figure(panels: list[dict[str, Any]], methods: list[str]) -> plt.Figure:
    """Rows of slices: target, each method, then each method's |error| (shown 4x brighter)."""
    columns = ["target", *methods, *[f"|error| {m} (x4)" for m in methods]]
    fig, axes = plt.subplots(
        len(panels),
        len(columns),
        figsize=(2.2 * len(columns), 2.5 * len(panels)),
        squeeze=False,
        layout="constrained",
    )
    for row, panel in enumerate(panels):
        target, scale = panel["target"], panel["target"].max()
        images = [
            target,
            *[panel[m] for m in methods],
            *[np.abs(target - panel[m]) for m in methods],
        ]
        for col, (title, image) in enumerate(zip(columns, images, strict=True)):
            vmax = scale if col <= len(methods) else scale / 4
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=vmax)
            axes[row, col].set_title(
                f"{panel['label']}\n{title}" if col == 0 else f"\n{title}", fontsize=8
            )
            axes[row, col].axis("off")
    return fig


def save_figure(run_dir: Path, panels: list[dict[str, Any]], methods: list[str]) -> None:
    """figure.png in the run directory, also logged to TensorBoard as ``eval/figure``."""
    figure = make_figure(panels, methods)
    figure.savefig(run_dir / "figure.png", dpi=90)
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        writer.add_figure("eval/figure", figure)
    plt.close(figure)
