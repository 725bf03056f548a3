"""`mri-recon-eval`: zero-filled and U-Net (and, later, TV) side by side with fastMRI metrics.

    mri-recon-eval checkpoint=runs/train/<run>/checkpoints/best.pt
    mri-recon-eval checkpoint=... split=test save_reconstructions=true   # submission files
    mri-recon-eval method=[zero_filled]                                  # no checkpoint needed

Writes into its run directory: metrics.json, per_volume.csv, report.md and, with
save_reconstructions=true, reconstructions/<method>/<acceleration>/<file name> holding dataset
``reconstruction`` (slices, H, W) as fastMRI submissions do. Masks are fixed per file, so
evaluating a checkpoint twice gives identical numbers. Test/challenge folders (no targets) are
reconstructed with their stored masks and only the files are written.
"""

import csv
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from mri_recon.checkpoint import load_checkpoint
from mri_recon.config import CONFIG_DIR
from mri_recon.data.dataset import SliceDataset
from mri_recon.data.loaders import build_dataset, build_loader, build_mask_func
from mri_recon.errors import UserError, report_user_errors
from mri_recon.metrics import METRICS, summarize, volume_metrics
from mri_recon.reconstruct import VolumeCollector, predict, unnormalize
from mri_recon.train import select_device, uses_bf16

log = logging.getLogger(__name__)

METHODS = ("zero_filled", "tv", "unet")


def load_model(cfg: DictConfig, device: torch.device) -> tuple[nn.Module, DictConfig]:
    """The checkpoint's U-Net (eval mode, on ``device``) and the config it was trained with."""
    if cfg.checkpoint is None:
        raise UserError(
            "method unet needs checkpoint=PATH (a best.pt or last.pt of mri-recon-train)"
        )
    state = load_checkpoint(cfg.checkpoint)
    train_cfg = OmegaConf.create(state["config"])
    model = hydra.utils.instantiate(train_cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise UserError(
            f"checkpoint {cfg.checkpoint}: weights do not fit its model config"
        ) from error
    return model.to(device).eval(), train_cfg


def data_config(cfg: DictConfig, train_cfg: DictConfig | None) -> DictConfig:
    """The checkpoint's data config, with this command line's ``data`` overrides on top."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    if train_cfg is None or any(item.startswith("data=") for item in overrides):
        return cfg.data
    data_overrides = OmegaConf.from_dotlist(
        [item for item in overrides if item.startswith("data.")]
    )
    return OmegaConf.merge({"data": train_cfg.data}, data_overrides).data


def reconstruct(
    dataset: SliceDataset,
    data_cfg: DictConfig,
    methods: list[str],
    model: nn.Module | None,
    device: torch.device,
    bf16: bool,
) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray | None, dict[str, float], int]:
    """Run every method over the dataset.

    Returns ({method: {file: (slices, H, W)}}, {file: target volume} or None for test files,
    {method: seconds per slice}, number of slices). Zero-filled time is reading + masking + IFFT;
    the U-Net's adds its forward pass to that.
    """
    loader = build_loader(dataset, data_cfg, shuffle=False)
    collectors = {method: VolumeCollector() for method in methods}
    targets = VolumeCollector()
    seconds = defaultdict(float)
    has_targets = True
    fetch_start = time.perf_counter()
    for batch in tqdm(loader, desc="reconstructing", leave=False, unit="batch"):
        fetch = time.perf_counter() - fetch_start
        seconds["zero_filled"] += fetch
        collectors.get("zero_filled", VolumeCollector()).add(
            unnormalize(batch.image, batch), batch.fname, batch.slice_num
        )
        if "unet" in methods:
            start = time.perf_counter()
            output = predict(model, batch.image, device, bf16)
            images = unnormalize(output, batch)  # copies to the CPU, so timing includes the sync
            seconds["unet"] += fetch + time.perf_counter() - start
            collectors["unet"].add(images, batch.fname, batch.slice_num)
        has_targets = batch.target.numel() > 0
        if has_targets:
            targets.add(unnormalize(batch.target, batch), batch.fname, batch.slice_num)
        fetch_start = time.perf_counter()
    num_slices = len(dataset)
    volumes = {method: collectors[method].volumes() for method in methods}
    per_slice = {method: seconds[method] / num_slices for method in methods}
    return volumes, targets.volumes() if has_targets else None, per_slice, num_slices


def write_volume(path: Path, volume: np.ndarray) -> None:
    """A fastMRI submission file: dataset ``reconstruction`` (slices, H, W), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=volume)
    os.replace(temporary, path)


def write_report(
    run_dir: Path, results: dict[str, Any], rows: list[dict[str, Any]], cfg: DictConfig
) -> None:
    """metrics.json, per_volume.csv and report.md."""
    volumes = {row["file"] for row in rows}
    summary = {
        "split": cfg.split,
        "num_volumes": len(volumes),
        "checkpoint": cfg.checkpoint,
        "results": results,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    with open(run_dir / "per_volume.csv", "w", newline="") as file:
        writer = csv.DictWriter(
            file, fieldnames=["file", "acceleration", "method", "slices", *METRICS]
        )
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Evaluation on `{cfg.split}` ({len(volumes)} volumes)", ""]
    if cfg.checkpoint:
        lines += [f"Checkpoint: `{cfg.checkpoint}`", ""]
    for acceleration, by_method in results.items():
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
    (run_dir / "report.md").write_text("\n".join(lines))


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate every method at every acceleration; return the ``results`` of metrics.json."""
    methods = list(cfg.method)
    for method in methods:
        if method not in METHODS:
            raise UserError(f"method: expected entries from {list(METHODS)}, got {method!r}")
    if "tv" in methods:
        raise UserError("method tv: the TV compressed-sensing baseline is not available yet")
    device = select_device(cfg.device)
    bf16 = uses_bf16(str(cfg.precision), device)
    model, train_cfg = load_model(cfg, device) if "unet" in methods else (None, None)
    data_cfg = data_config(cfg, train_cfg)

    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    pairs = list(zip(cfg.mask.center_fractions, cfg.mask.accelerations, strict=True))
    for center_fraction, acceleration in pairs:
        mask_cfg = OmegaConf.merge(
            cfg.mask, {"center_fractions": [center_fraction], "accelerations": [acceleration]}
        )
        dataset = build_dataset(data_cfg, cfg.split, build_mask_func(mask_cfg), fixed_masks=True)
        volumes, targets, per_slice, num_slices = reconstruct(
            dataset, data_cfg, methods, model, device, bf16
        )
        if targets is None:
            write_test_reconstructions(run_dir, dataset, volumes)
            log.info("%s holds no targets: wrote reconstructions only", cfg.split)
            write_report(run_dir, {}, [], cfg)
            return {}
        key = str(int(acceleration))
        results[key] = {}
        for method in methods:
            per_volume = []
            for name, volume in volumes[method].items():
                values = volume_metrics(targets[name], volume)
                per_volume.append(values)
                rows.append(
                    {
                        "file": name,
                        "acceleration": key,
                        "method": method,
                        "slices": volume.shape[0],
                        **values,
                    }
                )
                if cfg.save_reconstructions:
                    write_volume(run_dir / "reconstructions" / method / key / name, volume)
            results[key][method] = {**summarize(per_volume), "seconds_per_slice": per_slice[method]}
            log.info(
                "%sx %-11s NMSE %.4f  PSNR %.2f  SSIM %.4f  (%d slices)",
                key,
                method,
                results[key][method]["NMSE"]["mean"],
                results[key][method]["PSNR"]["mean"],
                results[key][method]["SSIM"]["mean"],
                num_slices,
            )
    write_report(run_dir, results, rows, cfg)
    log.info("report: %s", run_dir / "report.md")
    return results


def write_test_reconstructions(
    run_dir: Path, dataset: SliceDataset, volumes: dict[str, dict[str, np.ndarray]]
) -> None:
    """Test files: reconstructions grouped by each file's stored acceleration."""
    for method, by_file in volumes.items():
        for name, volume in by_file.items():
            acceleration = str(int(dataset.metadata[name].get("acceleration", 0)))
            write_volume(run_dir / "reconstructions" / method / acceleration / name, volume)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-eval`."""
    evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
