"""Evaluation: every method on every volume at every acceleration, with the fastMRI metrics.

One DataLoader batch is one volume; each method reconstructs it, its metrics are computed and its
files written before the next volume is read. Under torchrun the volumes are sharded across
ranks and their records gathered, so the metrics equal a single process's; rank 0 writes.
"""

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from mri_recon import distributed
from mri_recon.baselines.tv import check_baseline
from mri_recon.checkpoints import merge_saved_config, unknown_settings
from mri_recon.data.dataset import SliceDataset
from mri_recon.data.loaders import fixed_mask_datasets, volume_loader
from mri_recon.evaluation.consistency import check_consistency, uses_consistency
from mri_recon.evaluation.export import check_export, export_volumes
from mri_recon.evaluation.methods import (
    BASELINES,
    Reconstructor,
    checkpoint_list,
    load_learned,
    resolve_methods,
)
from mri_recon.evaluation.reports import save_figure, write_report, write_volume
from mri_recon.metrics import METRICS, summarize, volume_metrics
from mri_recon.models.interface import takes
from mri_recon.reconstruct import unnormalize
from mri_recon.runtime import Runtime

log = logging.getLogger(__name__)


class VolumeResult(NamedTuple):
    """One volume at one acceleration: {method: {metric: value}}, {method: seconds (read +
    reconstruct)}, and for the figure {"label", "target", method: ...} middle slices, or None."""

    file: str
    slices: int
    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]
    panel: dict[str, Any] | None


def data_config(cfg: DictConfig, train_cfg: DictConfig | None, overrides: list[str]) -> DictConfig:
    """The checkpoint's data config, with the command line's ``data`` overrides on top.

    Settings this version does not have (a checkpoint of another version) are left out, with
    a warning that names them.
    """
    if train_cfg is None or any(item.startswith("data=") for item in overrides):
        return cfg.data
    unknown = unknown_settings(train_cfg, cfg, ("data",))
    if unknown:
        log.warning(
            "the checkpoint's data settings %s are not known to this version: left out",
            ", ".join(unknown),
        )
    saved = {key: value for key, value in train_cfg.data.items() if key in cfg.data}
    data_overrides = [item for item in overrides if item.startswith("data.")]
    merged = merge_saved_config(
        OmegaConf.create({"data": cfg.data}), {"data": saved}, data_overrides
    )
    return merged.data


def save_volumes(
    cfg: DictConfig,
    run_dir: Path,
    dataset: SliceDataset,
    name: str,
    acceleration: int,
    volumes: dict[str, np.ndarray],
) -> None:
    """Write one volume's reconstructions: fastMRI .h5 files (``save_reconstructions``), NIfTI
    and DICOM (``export``)."""
    if cfg.save_reconstructions:
        for method, volume in volumes.items():
            write_volume(run_dir / "reconstructions" / method / str(acceleration) / name, volume)
    if cfg.export:
        source = next(path for path, _ in dataset.slices if path.name == name)
        patient_id = str(dataset.metadata[name].get("patient_id", ""))
        formats = list(cfg.export)
        export_volumes(run_dir / "export", acceleration, formats, source, patient_id, volumes)


def check_settings(cfg: DictConfig) -> None:
    """Raise UserError for the first setting of the evaluation config that cannot work, before
    any checkpoint or data is read: export formats, TV's (also the coil maps of ``_dc``
    methods), and data consistency's when a ``_dc`` method is asked for."""
    check_export(list(cfg.export))
    consistency = uses_consistency(cfg.method)
    if "tv" in cfg.method or consistency:
        check_baseline(cfg)
    if consistency:
        check_consistency(cfg)


def evaluate(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate every method at every acceleration; return the ``results`` of metrics.json.

    ``overrides`` are the command line's (``key=value``): the checkpoint's data config is used,
    with the ``data`` ones applied on top (``data=<preset>`` replaces it).

    Test/challenge folders (no targets) are reconstructed with their stored masks and only the
    files are written.
    """
    check_settings(cfg)
    runtime = Runtime.create(cfg.device, cfg.precision, deterministic=cfg.deterministic)
    distributed.setup(runtime.device.type)
    try:
        learned = {}
        if any(method not in BASELINES for method in cfg.method):
            learned = load_learned(checkpoint_list(cfg.checkpoint), runtime.device)
        kinds = {name: takes(model) for name, (model, _) in learned.items()}
        methods = resolve_methods(list(cfg.method), kinds)
        models = {name: model for name, (model, _) in learned.items()}
        train_cfg = next((train_cfg for _, train_cfg in learned.values()), None)
        model_paths = dict(zip(learned, checkpoint_list(cfg.checkpoint), strict=False))
        cfg = OmegaConf.merge(cfg, {"data": data_config(cfg, train_cfg, overrides or [])})
        reconstructor = Reconstructor(cfg, methods, models, runtime)
        kspace = reconstructor.needs_kspace()
        datasets = list(fixed_mask_datasets(cfg.data, cfg.mask, cfg.split, kspace))
        if not datasets[0][1].has_targets:  # test/challenge files: their own masks, no metrics
            write_test_reconstructions(cfg, run_dir, datasets[0][1], reconstructor)
            if distributed.is_main():
                write_report(run_dir, {}, [], cfg, models=model_paths)
            return {}
        results, rows, panels = {}, [], []
        for acceleration, dataset in datasets:
            records = evaluate_volumes(cfg, run_dir, dataset, reconstructor, acceleration)
            results[str(acceleration)] = summarize_methods(
                records, methods, len(dataset), acceleration
            )
            rows += [
                {
                    "file": r.file,
                    "acceleration": str(acceleration),
                    "method": method,
                    "slices": r.slices,
                    **r.metrics[method],
                }
                for r in records
                for method in methods
            ]
            panels += [r.panel for r in records if r.panel is not None]
        tv_notes = gather_tv_notes(reconstructor.tv_notes)
        if distributed.is_main():
            write_report(run_dir, results, rows, cfg, tv_notes, model_paths)
            if panels:
                save_figure(run_dir, panels, methods)
            log.info("report: %s", run_dir / "report.md")
        return results
    finally:
        distributed.cleanup()


def gather_tv_notes(notes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every rank's TV notes (``Reconstructor.tv_notes``) in one: the maps method, and the
    slices the guard replaced, sorted."""
    merged: dict[str, dict[str, Any]] = {}
    for part in distributed.gather(notes):
        for acceleration, note in part.items():
            into = merged.setdefault(
                acceleration, {"coil_maps": note["coil_maps"], "replaced_slices": []}
            )
            into["replaced_slices"] = sorted(into["replaced_slices"] + note["replaced_slices"])
    return merged


def evaluate_volumes(
    cfg: DictConfig,
    run_dir: Path,
    dataset: SliceDataset,
    reconstructor: Reconstructor,
    acceleration: int,
) -> list[VolumeResult]:
    """Every volume's record at one acceleration (all ranks' records, sorted by file name).

    Reconstructions are written as they are made (``save_reconstructions``); the figure shows
    the middle slice of the split's first ``figure_volumes`` volumes.
    """
    names = sorted({path.name for path, _ in dataset.slices})
    figure_files = set(names[: cfg.figure_volumes])
    records = []
    loader = volume_loader(dataset, cfg.data.num_workers)
    bar = tqdm(loader, desc=f"{acceleration}x", unit="volume", disable=not distributed.is_main())
    fetch_start = time.perf_counter()
    for batch in bar:
        fetch = time.perf_counter() - fetch_start  # every method is charged the read
        name = batch.fname[0]
        target = unnormalize(batch.target, batch)
        volumes, seconds = reconstructor(batch, acceleration)
        save_volumes(cfg, run_dir, dataset, name, acceleration, volumes)
        panel = None
        if name in figure_files:
            middle = target.shape[0] // 2
            panel = {"label": f"{name} slice {middle}, {acceleration}x", "target": target[middle]}
            panel |= {method: volume[middle] for method, volume in volumes.items()}
        records.append(
            VolumeResult(
                file=name,
                slices=target.shape[0],
                metrics={m: volume_metrics(target, v) for m, v in volumes.items()},
                seconds={m: fetch + s for m, s in seconds.items()},
                panel=panel,
            )
        )
        fetch_start = time.perf_counter()
    gathered = [record for part in distributed.gather(records) for record in part]
    return sorted(gathered, key=lambda record: record.file)


def summarize_methods(
    records: list[VolumeResult], methods: list[str], num_slices: int, acceleration: int
) -> dict[str, dict[str, Any]]:
    """{method: {metric: {"mean", "std"} over volumes, "seconds_per_slice"}}, logged."""
    summary = {}
    for method in methods:
        values = {
            **summarize([{m: r.metrics[method][m] for m in METRICS} for r in records]),
            "seconds_per_slice": sum(r.seconds[method] for r in records) / num_slices,
        }
        summary[method] = values
        log.info(
            "%sx %-11s NMSE %.4f  PSNR %.2f  SSIM %.4f  %.4f s/slice",
            acceleration,
            method,
            values["NMSE"]["mean"],
            values["PSNR"]["mean"],
            values["SSIM"]["mean"],
            values["seconds_per_slice"],
        )
    return summary


def write_test_reconstructions(
    cfg: DictConfig, run_dir: Path, dataset: SliceDataset, reconstructor: Reconstructor
) -> None:
    """Test/challenge files: reconstruct with each file's stored mask and acceleration."""
    loader = volume_loader(dataset, cfg.data.num_workers)
    submission = OmegaConf.merge(cfg, {"save_reconstructions": True})  # the point of a test split
    for batch in tqdm(loader, desc="test volumes", unit="volume"):
        name = batch.fname[0]
        acceleration = int(dataset.metadata[name].get("acceleration", 0))
        volumes, _ = reconstructor(batch, acceleration)
        save_volumes(submission, run_dir, dataset, name, acceleration, volumes)
    log.info(
        "%s holds no targets: wrote reconstructions to %s", cfg.split, run_dir / "reconstructions"
    )
