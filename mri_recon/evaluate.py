"""`mri-recon-eval`: zero-filled, TV and U-Net side by side with the fastMRI metrics.

    mri-recon-eval checkpoint=runs/train/<run>/checkpoints/best.pt
    mri-recon-eval checkpoint=... split=test save_reconstructions=true   # submission files
    mri-recon-eval method=[zero_filled,tv]                               # no checkpoint needed

Writes into its run directory: metrics.json, per_volume.csv, report.md, figure.png (also logged to
TensorBoard) and, with save_reconstructions=true, reconstructions/<method>/<acceleration>/<file>
holding dataset ``reconstruction`` (slices, H, W) as fastMRI submissions do. Masks are fixed per
file, so evaluating a checkpoint twice gives identical numbers. Test/challenge folders (no targets)
are reconstructed with their stored masks and only the files are written.

One DataLoader batch is one volume; each method reconstructs it, its metrics are computed and its
files written before the next volume is read.
"""

import csv
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import hydra
import matplotlib
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mri_recon import distributed
from mri_recon.baselines.tv import TVSettings, tv_reconstruct
from mri_recon.checkpoint import load_checkpoint
from mri_recon.config import CONFIG_DIR, PROJECT_DIR, check_overrides
from mri_recon.data.dataset import SliceDataset
from mri_recon.data.loaders import fixed_mask_datasets
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError, report_user_errors
from mri_recon.files import atomic_path
from mri_recon.metrics import METRICS, summarize, volume_metrics
from mri_recon.reconstruct import predict, unnormalize
from mri_recon.train import select_device, uses_bf16

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
    # Defaults first, so checkpoints from older versions get the keys added since.
    defaults = OmegaConf.to_container(cfg.data)
    return OmegaConf.merge({"data": defaults}, {"data": train_cfg.data}, data_overrides).data


def tv_settings(
    baseline: DictConfig, challenge: str, acceleration: int, lam: float | None = None
) -> TVSettings:
    """The TV solver settings, with ``lam`` or else the configured weight for this challenge and
    acceleration (``baseline.lam.<challenge>.<acceleration>``)."""
    if lam is None:
        lam = OmegaConf.select(baseline, f"lam.{challenge}.{acceleration}")
        if lam is None:
            raise UserError(f"baseline.lam.{challenge} has no value for {acceleration}x")
    return TVSettings(float(lam), baseline.iterations, baseline.tolerance, baseline.rho_per_lam)


def tv_volume(
    batch: Sample, settings: TVSettings, device: torch.device, batch_size: int
) -> np.ndarray:
    """TV reconstruction (slices, H, W) of one volume batch, ``batch_size`` slices at a time."""
    crop = tuple(batch.image.shape[-2:])
    outputs = [
        tv_reconstruct(
            batch.masked_kspace[i : i + batch_size].to(device),
            batch.mask[i : i + batch_size].to(device),
            crop,
            settings,
        ).cpu()
        for i in range(0, len(batch.fname), batch_size)
    ]
    return torch.cat(outputs).numpy().astype(np.float32)


def volume_loader(dataset: SliceDataset, num_workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader whose every batch is one whole volume, slices in order.

    Under torchrun each rank gets its own balanced share of the volumes.
    """
    by_file: dict[str, list[int]] = defaultdict(list)
    for index in distributed.my_volume_indices([path.name for path, _ in dataset.slices]):
        by_file[dataset.slices[index][0].name].append(index)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=list(by_file.values()), num_workers=num_workers
    )


class Reconstructor:
    """Runs the requested methods on one volume batch and times each of them."""

    def __init__(
        self,
        cfg: DictConfig,
        methods: list[str],
        model: nn.Module | None,
        chunk: int,
        device: torch.device,
    ):
        self.cfg = cfg
        self.methods = methods
        self.model = model
        self.chunk = chunk
        self.device = device
        self.bf16 = uses_bf16(str(cfg.precision), device)

    def unet(self, batch: Sample) -> np.ndarray:
        outputs = [
            predict(self.model, batch.image[i : i + self.chunk], self.device, self.bf16)
            for i in range(0, len(batch.fname), self.chunk)
        ]
        return unnormalize(torch.cat(outputs), batch)

    def tv(self, batch: Sample, acceleration: int) -> np.ndarray:
        settings = tv_settings(self.cfg.baseline, self.cfg.data.challenge, acceleration)
        return tv_volume(batch, settings, self.device, self.cfg.baseline.batch_size)

    def __call__(
        self, batch: Sample, acceleration: int, seconds: dict[str, float], fetch: float
    ) -> dict[str, np.ndarray]:
        """{method: (slices, H, W)} for one volume; adds each method's time to ``seconds``.

        Every method starts from the same k-space read, so each is charged the read time.
        """
        volumes = {}
        for method in self.methods:
            start = time.perf_counter()
            if method == "zero_filled":
                volumes[method] = unnormalize(batch.image, batch)
            elif method == "unet":
                volumes[method] = self.unet(batch)
            else:
                volumes[method] = self.tv(batch, acceleration)
            seconds[method] += fetch + time.perf_counter() - start
        return volumes


def write_volume(path: Path, volume: np.ndarray) -> None:
    """A fastMRI submission file: dataset ``reconstruction`` (slices, H, W), written atomically."""
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("reconstruction", data=volume)


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
    with atomic_path(run_dir / "metrics.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=2))
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


def write_test_reconstructions(
    cfg: DictConfig, run_dir: Path, dataset: SliceDataset, reconstructor: Reconstructor
) -> None:
    """Test/challenge files: reconstruct with each file's stored mask and acceleration."""
    seconds: dict[str, float] = defaultdict(float)
    for batch in tqdm(
        volume_loader(dataset, cfg.data.num_workers), desc="test volumes", unit="volume"
    ):
        name = batch.fname[0]
        acceleration = int(dataset.metadata[name].get("acceleration", 0))
        for method, volume in reconstructor(batch, acceleration, seconds, 0.0).items():
            write_volume(run_dir / "reconstructions" / method / str(acceleration) / name, volume)
    log.info(
        "%s holds no targets: wrote reconstructions to %s", cfg.split, run_dir / "reconstructions"
    )


def evaluate_volumes(
    cfg: DictConfig,
    run_dir: Path,
    dataset: SliceDataset,
    reconstructor: Reconstructor,
    key: str,
) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, Any]]]:
    """This rank's volumes at one acceleration: (per-volume rows, seconds per method, panels)."""
    rows: list[dict[str, Any]] = []
    panels: list[dict[str, Any]] = []
    seconds: dict[str, float] = defaultdict(float)
    loader = volume_loader(dataset, cfg.data.num_workers)
    fetch_start = time.perf_counter()
    for index, batch in enumerate(
        tqdm(loader, desc=f"{key}x", unit="volume", disable=not distributed.is_main())
    ):
        fetch = time.perf_counter() - fetch_start
        name = batch.fname[0]
        target = unnormalize(batch.target, batch)
        volumes = reconstructor(batch, int(key), seconds, fetch)
        for method, volume in volumes.items():
            values = volume_metrics(target, volume)
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
        if index < cfg.figure_volumes:
            middle = target.shape[0] // 2
            panel = {"label": f"{name} slice {middle}, {key}x", "target": target[middle]}
            panels.append(panel | {m: v[middle] for m, v in volumes.items()})
        fetch_start = time.perf_counter()
    return rows, dict(seconds), panels


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate every method at every acceleration; return the ``results`` of metrics.json.

    Under torchrun the volumes are sharded across ranks and the per-volume rows gathered, so the
    metrics equal a single-process run's; rank 0 writes the reports.
    """
    methods = list(cfg.method)
    for method in methods:
        if method not in METHODS:
            raise UserError(f"method: expected entries from {list(METHODS)}, got {method!r}")
    device = distributed.device_for(select_device(cfg.device))
    distributed.setup(device.type)
    model, train_cfg = load_model(cfg, device) if "unet" in methods else (None, None)
    data_cfg = data_config(cfg, train_cfg)
    cfg = OmegaConf.merge(cfg, {"data": data_cfg})
    reconstructor = Reconstructor(cfg, methods, model, chunk=data_cfg.batch_size, device=device)

    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    panels: list[dict[str, Any]] = []
    for acceleration, dataset in fixed_mask_datasets(
        data_cfg, cfg.mask, cfg.split, "tv" in methods
    ):
        if dataset[0].target.numel() == 0:
            write_test_reconstructions(cfg, run_dir, dataset, reconstructor)
            if distributed.is_main():
                write_report(run_dir, {}, [], cfg)
            distributed.cleanup()
            return {}

        key = str(acceleration)
        gathered = distributed.gather(evaluate_volumes(cfg, run_dir, dataset, reconstructor, key))
        key_rows = sorted(
            (row for part, _, _ in gathered for row in part),
            key=lambda r: (r["file"], METHODS.index(r["method"])),
        )
        rows += key_rows
        panels += gathered[0][2]
        results[key] = {}
        for method in methods:
            per_volume = [
                {m: row[m] for m in METRICS} for row in key_rows if row["method"] == method
            ]
            seconds = sum(part_seconds.get(method, 0.0) for _, part_seconds, _ in gathered)
            results[key][method] = {
                **summarize(per_volume),
                "seconds_per_slice": seconds / len(dataset),
            }
            values = results[key][method]
            log.info(
                "%sx %-11s NMSE %.4f  PSNR %.2f  SSIM %.4f  %.4f s/slice",
                key,
                method,
                values["NMSE"]["mean"],
                values["PSNR"]["mean"],
                values["SSIM"]["mean"],
                values["seconds_per_slice"],
            )

    if distributed.is_main():
        write_report(run_dir, results, rows, cfg)
        if panels:
            figure = make_figure(panels, methods)
            figure.savefig(run_dir / "figure.png", dpi=90)
            with SummaryWriter(log_dir=str(run_dir)) as writer:
                writer.add_figure("eval/figure", figure)
            plt.close(figure)
        log.info("report: %s", run_dir / "report.md")
    distributed.cleanup()
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `mri-recon-eval`."""
    evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


def cli() -> None:
    """The console script: checks the overrides, then runs the Hydra app."""
    sys.argv += distributed.hydra_overrides(sys.argv[1:], "eval", str(PROJECT_DIR))
    check_overrides("eval", sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
