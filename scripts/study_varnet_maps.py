"""How much the VarNet's coil maps hold it back: train and evaluate it with maps from elsewhere.

A study, not a feature (docs/results.md, the VarNet table and its reading). It replaces the maps
of ``experiment=varnet_multicoil`` (``sens_chans=0``; when the study ran, ``sens_maps`` was
``center_lines``: the measured center lines' coil images over their root-sum-of-squares; add
``model.sens_maps=center_lines`` to repeat its ``measured`` rows) for one run, then trains or
evaluates as the tools do:

    .venv/bin/python scripts/study_varnet_maps.py train full runs/maps/full \\
        experiment=varnet_multicoil trainer.max_time=null trainer.max_epochs=3
    .venv/bin/python scripts/study_varnet_maps.py eval full runs/maps/full_eval \\
        checkpoint=runs/maps/full/checkpoints/best.pt "method=[learned]"
    .venv/bin/python scripts/study_varnet_maps.py span    # maps from N center lines, no training

MAPS: ``measured`` (the model's own, ``model.sens_maps``), ``full`` (each slice's coil images from its fully sampled
k-space, read from its file: not realizable, a bound), ``full:N`` (from its central N columns),
``walsh`` (the TV baseline's adaptive-combine maps from the measured center lines), ``espirit``
(the TV baseline's ESPIRiT maps from the measured center lines, cached per slice),
``recompute:N`` (before every cascade after the first, from the central N columns of the current
k-space) and ``residual`` (a sensitivity U-Net, ``model.sens_chans``, added to the measured maps,
its last layer zero so that it starts from them).
"""

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from mri_recon.baselines import coil_maps
from mri_recon.config import CONFIG_DIR, PROJECT_DIR
from mri_recon.evaluation.run import evaluate
from mri_recon.fourier import centering_ramps, ifft2c
from mri_recon.metrics import volume_metrics
from mri_recon.models import interface, varnet
from mri_recon.training.loop import fit

DEMO = PROJECT_DIR / "data" / "demo"
batch_slices: list[tuple[str, int]] = []  # (file name, slice) of the batch the model is given


def unit_rss(images: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) complex images over their root-sum-of-squares across coils C."""
    return images / images.abs().square().sum(dim=-3, keepdim=True).sqrt().clamp_min(1e-12)


def center_line_maps(kspace: torch.Tensor, count: int) -> torch.Tensor:
    """(..., C, H, W) maps from the central ``count`` columns: today's (``sens_chans=0``)."""
    return unit_rss(
        ifft2c(kspace * coil_maps.center_window(kspace.shape[-1], count, kspace.device))
    )


def full_maps(
    files: dict[str, Path], fname: str, slice_num: int, count: int | None
) -> torch.Tensor:
    """(C, H, W) maps from a slice's fully sampled k-space (its central ``count`` columns)."""
    with h5py.File(files[fname]) as file:
        kspace = torch.from_numpy(file["kspace"][slice_num]).to(torch.complex64)
    return center_line_maps(kspace, count) if count else unit_rss(ifft2c(kspace))


def use_full_maps(count: int | None) -> None:
    """Give every batch the maps of its slices' fully sampled k-space."""
    files = {path.name: path for path in DEMO.glob("multicoil_*/*.h5")}
    cache: dict[tuple[str, int], torch.Tensor] = {}
    original = interface.kspace_output

    def kspace_output(model, batch, runtime):
        batch_slices[:] = list(zip(batch.fname, map(int, batch.slice_num), strict=True))
        return original(model, batch, runtime)

    def maps(self, kspace, mask, num_low):
        for key in batch_slices:
            if key not in cache:
                cache[key] = full_maps(files, *key, count)
        return torch.stack([cache[key] for key in batch_slices]).to(kspace.device)

    interface.kspace_output = kspace_output
    varnet.SensitivityNet.forward = maps


def walsh_first_coil_maps(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Walsh's maps from the measured center lines with the first coil's phase as reference
    (what the TV baseline used when this study ran)."""
    count = int(coil_maps.center_columns(mask).min())
    maps = coil_maps.walsh_maps(coil_maps.center_images(kspace, count))
    reference = maps[:, :1]
    return maps * (reference.conj() / (reference.abs() + 1e-12))


def use_walsh_maps() -> None:
    """Walsh's adaptive combine from the measured center lines (the TV baseline's maps then)."""
    varnet.SensitivityNet.forward = lambda self, kspace, mask, num_low: walsh_first_coil_maps(
        kspace, mask
    )


def use_recomputed_maps(count: int) -> None:
    """Before every cascade after the first, maps from the current k-space's central columns
    (the cascades' modulated k-space gives the modulated maps they use)."""

    def forward(self, kspace, mask, num_low, crop):
        sampled = mask.bool().float()[:, None, None, :]
        kspace_ramp, image_ramp = centering_ramps(*kspace.shape[-2:], kspace.device, kspace.dtype)
        measured = kspace * kspace_ramp
        maps = self.sens_net(kspace, mask, num_low) * image_ramp.conj()
        window = coil_maps.center_window(kspace.shape[-1], count, kspace.device)
        current = measured
        for index, cascade in enumerate(self.cascades):
            if index:
                maps = unit_rss(torch.fft.ifft2(current * window, norm="ortho"))
            current = cascade(current, measured, sampled, maps)
        image = torch.fft.ifft2(current, norm="ortho").abs().square().sum(dim=1).sqrt()
        top, left = (image.shape[-2] - crop[0]) // 2, (image.shape[-1] - crop[1]) // 2
        return image[:, top : top + crop[0], left : left + crop[1]]

    varnet.VarNet.forward = forward


def use_residual_maps() -> None:
    """Measured maps plus a sensitivity U-Net's correction that starts at zero."""
    original_init = varnet.SensitivityNet.__init__

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        torch.nn.init.zeros_(self.norm_unet.unet.head.weight)
        torch.nn.init.zeros_(self.norm_unet.unet.head.bias)

    def maps(self, kspace, mask, num_low):
        lines = varnet.center_lines(mask, num_low)[:, None, None, :]
        images = ifft2c(kspace * lines)
        batch, coils, height, width = images.shape
        flat = images.reshape(batch * coils, 1, height, width)
        return unit_rss(images + self.norm_unet(flat).reshape(batch, coils, height, width))

    varnet.SensitivityNet.__init__ = init
    varnet.SensitivityNet.forward = maps


def use_espirit_maps() -> None:
    """ESPIRiT maps from the measured center lines (``espirit_aligned_maps``), computed once per
    slice and center width and kept for later epochs."""
    cache: dict[tuple[str, int, int], torch.Tensor] = {}
    original = interface.kspace_output

    def kspace_output(model, batch, runtime):
        batch_slices[:] = list(zip(batch.fname, map(int, batch.slice_num), strict=True))
        return original(model, batch, runtime)

    def maps(self, kspace, mask, num_low):
        counts = coil_maps.center_columns(mask.reshape(len(kspace), -1))
        for index, (key, count) in enumerate(zip(batch_slices, counts.tolist(), strict=True)):
            if (*key, count) not in cache:
                cache[(*key, count)] = espirit_aligned_maps(kspace[index : index + 1], count)[0]
        return torch.stack(
            [cache[(*key, c)] for key, c in zip(batch_slices, counts.tolist(), strict=True)]
        ).to(kspace.device)

    interface.kspace_output = kspace_output
    varnet.SensitivityNet.forward = maps


def use_maps(name: str) -> None:
    """Patch the VarNet to take its maps as ``name`` (module docstring) says."""
    kind, _, count = name.partition(":")
    if kind == "full":
        use_full_maps(int(count) if count else None)
    elif kind == "walsh":
        use_walsh_maps()
    elif kind == "espirit":
        use_espirit_maps()
    elif kind == "recompute":
        use_recomputed_maps(int(count))
    elif kind == "residual":
        use_residual_maps()
    elif kind != "measured":
        raise SystemExit(
            f"maps: expected measured, full[:N], walsh, espirit, recompute:N or residual, got {name!r}"
        )


def walsh_aligned_maps(kspace: torch.Tensor, count: int) -> torch.Tensor:
    """(S, C, H, W) Walsh maps from the central ``count`` columns, each pixel's phase turned to
    that of the center-line maps (Walsh's own reference, the first coil, is far worse)."""
    window = coil_maps.center_window(kspace.shape[-1], count, kspace.device)
    window = window.expand(len(kspace), -1)
    maps = walsh_first_coil_maps(kspace, window)
    reference = center_line_maps(kspace, count)
    return maps * torch.exp(1j * torch.angle((maps.conj() * reference).sum(dim=1, keepdim=True)))


def espirit_aligned_maps(kspace: torch.Tensor, count: int) -> torch.Tensor:
    """(S, C, H, W) ESPIRiT maps (the TV baseline's, configs/baseline/tv.yaml's defaults) from
    the central ``count`` columns, each pixel's phase turned to that of the center-line maps."""
    maps, _ = coil_maps.espirit_maps(kspace, count, coil_maps.MapSettings())
    reference = center_line_maps(kspace, count)
    return maps * torch.exp(1j * torch.angle((maps.conj() * reference).sum(dim=1, keepdim=True)))


def map_scores(kspace: torch.Tensor, target: np.ndarray, maps: torch.Tensor) -> list[float]:
    """[summed squared map error against the fully sampled maps, weighted by the RSS image
    squared; that weight summed; energy of the coil combination of the true coil images off the
    positive real axis; its energy; projection SSIM; projection PSNR], inside the target crop."""
    images = ifft2c(kspace)  # (S, C, H, W)
    rss = images.abs().square().sum(dim=1)
    error = (maps - unit_rss(images)).abs().square().sum(dim=1) * rss
    combined = (maps.conj() * images).sum(dim=1)
    top, left = (np.array(combined.shape[-2:]) - target.shape[-2:]) // 2
    window = (slice(None), slice(top, top + target.shape[-2]), slice(left, left + target.shape[-1]))
    crop = combined[window]
    off_axis = crop.imag.square().sum() + crop.real.clamp(max=0).square().sum()
    metrics = volume_metrics(target, crop.abs().numpy())  # |combination| = RSS of projection
    sums = [error[window].sum(), rss[window].sum(), off_axis, crop.abs().square().sum()]
    return [float(value) for value in sums] + [metrics["SSIM"], metrics["PSNR"]]


def span() -> None:
    """Maps from N measured center columns on the demo's val split, without training: their
    error against the fully sampled k-space's maps where the signal is, the share of their
    coil combination's energy off the positive real axis, and how well their span holds the
    true coil images (RSS of the projection against the target: SSIM, PSNR)."""
    volumes = []
    for path in sorted((DEMO / "multicoil_val").glob("*.h5")):
        with h5py.File(path) as file:
            volumes.append((torch.from_numpy(file["kspace"][()]), file["reconstruction_rss"][()]))
    estimators = [(f"center lines, {count}", center_line_maps, count) for count in (6, 12, 24, 48)]
    estimators += [(f"Walsh, {count}", walsh_aligned_maps, count) for count in (6, 12)]
    for name, estimate, count in estimators:
        scores = np.array([map_scores(k, t, estimate(k, count)) for k, t in volumes])
        error, weight, off_axis, energy = scores[:, :4].sum(axis=0)
        projection_ssim, projection_psnr = scores[:, 4:].mean(axis=0)
        print(
            f"{name}: map error {error / weight:.4f}, off the real axis "
            f"{100 * off_axis / energy:.2f}%, projection SSIM {projection_ssim:.4f}, "
            f"PSNR {projection_psnr:.2f} dB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("train", "eval", "span"))
    parser.add_argument("maps", nargs="?", default="measured")
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.command == "span":
        span()
        return
    use_maps(args.maps)
    name = "train" if args.command == "train" else "eval"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=name, overrides=args.overrides)
    run = fit if args.command == "train" else evaluate
    print(run(cfg, args.run_dir, args.overrides))


if __name__ == "__main__":
    main()
