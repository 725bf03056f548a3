"""GPU rows of the benchmarks (`make gpu-check` runs them): training steps of our U-Net and
VarNet against fastMRI's at release size, in fp32, the precision ``auto`` picks and compiled;
seconds per slice; peak GPU memory; the device-side transform; the GPU's bf16 matrix rate;
multi-coil TV's seconds per slice (ESPIRiT maps and the configured lam, a generated volume of 8
release-size slices in one batch).

    .venv/bin/python scripts/benchmark_gpu.py [--root data/demo] [--size release|demo]

Every step is ``mri_recon.training.step.train_step`` (what training runs, imported) on a batch
already on the GPU; fastMRI's networks go through the same loss and optimizer calls on their
own tensors. Each figure: median of ``--repeats`` steps after warm-up steps (compiled variants:
more, for the compilation), the GPU synchronized around each timed call. ``--size demo`` and
``--device cpu`` only check the script on a machine without a GPU.
"""

import argparse
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

import benchmark_data
import benchmark_tv
import torch
from benchmark_flops import MM_SIZE, best_gflops
from benchmark_train import median_milliseconds
from benchmark_varnet import fastmri_step, synthetic_batch
from fastmri.models import Unet as FastmriUnet
from fastmri.models import VarNet as FastmriVarNet
from torch.utils.flop_counter import FlopCounterMode

from mri_recon.baselines.tv import tv_settings
from mri_recon.config import PROJECT_DIR
from mri_recon.data.transforms import Sample
from mri_recon.losses import L1Loss, StructuralLoss
from mri_recon.models.interface import model_output
from mri_recon.models.unet import Unet
from mri_recon.models.varnet import VarNet
from mri_recon.runtime import Runtime
from mri_recon.schedulers import Horizon, constant
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step

# (batch, height, width) of U-Net slices and (coils, H, W, target) of VarNet k-space.
SIZES = {
    "release": {"unet": (8, 320, 320), "varnet": (15, 640, 368, (320, 320))},
    "demo": {"unet": (4, 128, 128), "varnet": (8, 256, 144, (128, 128))},
}
# Our default U-Net (configs/model/unet.yaml) and fastMRI's VarNet defaults.
UNET = {"in_chans": 1, "out_chans": 1, "num_pool_layers": 4, "norm": "group", "groups": 256}
FASTMRI_VARNET = {"num_cascades": 12, "chans": 18, "sens_chans": 8}
LAYER_FOR_LAYER = {**FASTMRI_VARNET, "norm": "instance", "crop_readout": False}


def on_device(batch: Sample, device: torch.device) -> Sample:
    """The batch with every tensor already on ``device`` (no copies inside the timed steps)."""
    return Sample(*(v.to(device) if isinstance(v, torch.Tensor) else v for v in batch))


def adam(model: torch.nn.Module) -> torch.optim.Optimizer:
    """configs/optimizer/adam.yaml's optimizer: fused Adam, lr 3e-3."""
    return torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)


def our_step(
    model: torch.nn.Module, loss: torch.nn.Module, batch: Sample, runtime: Runtime, compile: bool
) -> Callable[[], object]:
    """One ``train_step`` of ``model`` (placed on the runtime's device, compiled if asked)."""
    model = runtime.place(model)
    optimizer = adam(model)
    state = TrainState(model, optimizer, constant(optimizer, Horizon(0), 0), {}, loss)
    state.module = runtime.training_module(model, compile)
    return functools.partial(train_step, state, batch, runtime, clip=1.0)


def timed(step: Callable[[], object], device: str, repeats: int, compiled: bool) -> dict:
    """Median ms of ``step`` and the GPU memory it peaked at (MB; 0 on the CPU); a variant
    that fails (a compile mode this torch cannot run) is a row that says so."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        ms = median_milliseconds(step, device, repeats, warmup=5 if compiled else 2)
    except Exception as error:  # noqa: BLE001 - reported in the table, the others still run
        return {"error": str(error).splitlines()[0][:120]}
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    return {"ms": ms, "peak_mb": peak}


def unet_rows(size: tuple, device: str, repeats: int) -> list[tuple[str, dict]]:
    """U-Net steps: fastMRI's Unet (chans 32, RMSprop, fp32, as its recipe trains it) first."""
    batch_size, height, width = size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 1, height, width, generator=generator)
    batch = on_device(Sample(images, torch.randn(images.shape, generator=generator)), device)
    fp32 = Runtime.create(device, "32", False)
    theirs = fp32.place(FastmriUnet(1, 1, 32, 4))
    optimizer = torch.optim.RMSprop(theirs.parameters(), lr=1e-3)
    state = TrainState(theirs, optimizer, constant(optimizer, Horizon(0), 0), {}, L1Loss())
    step = functools.partial(train_step, state, batch, fp32, clip=None)
    rows = [("fastmri.models.Unet chans 32, RMSprop, fp32", timed(step, device, repeats, False))]
    auto = Runtime.create(device, "auto")
    for label, chans, runtime, compile in (
        ("ours (chans 16), fp32", 16, fp32, False),
        ("ours (chans 16), precision auto", 16, auto, False),
        ("ours (chans 16), precision auto, compiled", 16, auto, True),
        ("ours (chans 16), precision auto, compiled reduce-overhead", 16, auto, "reduce-overhead"),
        ("ours chans 32, precision auto", 32, auto, False),
    ):
        torch.manual_seed(0)
        step = our_step(Unet(chans=chans, **UNET), L1Loss(), batch, runtime, compile)
        rows.append((label, timed(step, device, repeats, bool(compile))))
    return rows


def unet_tflops(size: tuple, device: str, milliseconds: float) -> float:
    """TFLOP/s of our default U-Net's step (precision auto) taking ``milliseconds``."""
    batch_size, height, width = size
    images = torch.randn(batch_size, 1, height, width)
    batch = on_device(Sample(images, images.clone()), device)
    step = our_step(Unet(chans=16, **UNET), L1Loss(), batch, Runtime.create(device, "auto"), False)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / milliseconds / 1e9


def fastmri_varnet_step(batch: Sample, device: str) -> Callable[[], object]:
    """fastmri.models.VarNet's step at its defaults (fp32), on ``device``."""
    return fastmri_step(FastmriVarNet(**FASTMRI_VARNET).to(device), batch)


def varnet_rows(size: tuple, device: str, repeats: int) -> list[tuple[str, dict]]:
    """VarNet steps on one slice: fastMRI's at its defaults first, then ours layer for layer."""
    torch.manual_seed(0)
    batch = on_device(synthetic_batch(size), device)
    fp32, auto = Runtime.create(device, "32", False), Runtime.create(device, "auto")
    rows = [
        (
            "fastmri.models.VarNet (12 cascades, chans 18, sens chans 8), fp32",
            timed(fastmri_varnet_step(batch, device), device, repeats, False),
        )
    ]
    for label, settings, runtime, compile in (
        ("ours, same settings, fp32", LAYER_FOR_LAYER, fp32, False),
        ("ours, same settings, precision auto", LAYER_FOR_LAYER, auto, False),
        (
            "ours, same + crop_readout, precision auto",
            {**LAYER_FOR_LAYER, "crop_readout": True},
            auto,
            False,
        ),
        ("ours, same settings, precision auto, compiled", LAYER_FOR_LAYER, auto, True),
    ):
        torch.manual_seed(0)
        step = our_step(VarNet(**settings), StructuralLoss(), batch, runtime, compile)
        rows.append((label, timed(step, device, repeats, compile)))
    return rows


@torch.no_grad()
def varnet_seconds_per_slice(size: tuple, device: str) -> tuple[float, float]:
    """Inference seconds per slice: ours (same settings, precision auto), fastMRI's (fp32)."""
    batch = on_device(synthetic_batch(size), device)
    auto = Runtime.create(device, "auto")
    ours = auto.place(VarNet(**LAYER_FOR_LAYER)).eval()
    theirs = FastmriVarNet(**FASTMRI_VARNET).to(device).eval()
    kspace, mask = (
        torch.view_as_real(batch.masked_kspace),
        batch.mask.bool()[:, None, None, :, None],
    )
    low = int(batch.num_low_frequencies[0])
    mine = median_milliseconds(
        functools.partial(model_output, ours, "kspace", batch, auto), device, 5
    )
    theirs_ms = median_milliseconds(functools.partial(theirs, kspace, mask, low), device, 5)
    return mine / 1000, theirs_ms / 1000


def table(rows: list[tuple[str, dict]], slices: int) -> list[str]:
    """Markdown rows: ms a step, slices/s, the ratio to the first row, peak memory."""
    reference = rows[0][1]["ms"]
    lines = [
        "| network | ms a step | slices/s | vs fastMRI | peak GPU memory |",
        "|---|---|---|---|---|",
    ]
    for name, value in rows:
        if "error" in value:
            lines.append(f"| {name} | failed: {value['error']} | | | |")
            continue
        rate = 1000 * slices / value["ms"]
        memory = f"{value['peak_mb'] / 1024:.1f} GiB" if value["peak_mb"] else "-"
        lines.append(
            f"| {name} | {value['ms']:.1f} | {rate:.0f} | {reference / value['ms']:.2f}x | {memory} |"
        )
    return lines


def bf16_matmul_gflops(device: str, size: int = 4 * MM_SIZE) -> float:
    """GFLOP/s of a ``size`` square bf16 matrix product: the GPU's rate for dense arithmetic."""
    matrix = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    return best_gflops(functools.partial(torch.mm, matrix, matrix), 2 * size**3, device)


def tv_seconds_per_slice(root: Path, size_name: str, device: str) -> dict[int, float]:
    """{acceleration: seconds a slice} of multi-coil TV as evaluation runs it (maps included)
    on one volume: a generated release-size one (8 slices, 15 coils, 640x368) or, for
    ``--size demo``, the demo's first val volume."""
    baseline = benchmark_tv.load_configs()[0].baseline
    with tempfile.TemporaryDirectory() as tmp:
        if size_name == "release":
            root = Path(tmp)
            benchmark_tv.make_release_data(root)
        seconds = {}
        for acceleration in (4, 8):
            batch = benchmark_tv.volumes(root, "multicoil", acceleration, 1)[0]
            settings = tv_settings(baseline, "multicoil", acceleration)
            seconds[acceleration] = benchmark_tv.ours(batch, settings, device)[1]
    return seconds


def run(root: Path, size_name: str, device: str, repeats: int) -> str:
    """The GPU section of docs/gpu.md (markdown)."""
    sizes = SIZES[size_name]
    matmul = bf16_matmul_gflops(device)
    unet = unet_rows(sizes["unet"], device, repeats)
    tflops = unet_tflops(sizes["unet"], device, unet[2][1]["ms"]) / 1000
    varnet = varnet_rows(sizes["varnet"], device, repeats)
    ours_s, theirs_s = varnet_seconds_per_slice(sizes["varnet"], device)
    transform, _ = benchmark_data.device_transform_rate(root, "multicoil")
    tv = tv_seconds_per_slice(root, size_name, device)
    batch_size, height, width = sizes["unet"]
    coils, kheight, kwidth, _ = sizes["varnet"]
    return "\n".join(
        [
            f"### U-Net steps, {batch_size} x {height}x{width} slices",
            "",
            *table(unet, batch_size),
            "",
            f"Our default U-Net's step (precision auto) runs at {tflops:.2f} TFLOP/s, "
            f"{100 * tflops * 1000 / matmul:.1f}% of this GPU's {matmul / 1000:.1f} TFLOP/s "
            f"bf16 matrix product ({4 * MM_SIZE}x{4 * MM_SIZE}).",
            "",
            f"### VarNet steps, one slice of {coils} coils, {kheight}x{kwidth} k-space",
            "",
            *table(varnet, 1),
            "",
            f"Inference seconds per slice: ours (same settings, precision auto) {ours_s:.3f}, "
            f"fastmri.models.VarNet (fp32) {theirs_s:.3f} ({theirs_s / ours_s:.2f}x).",
            "",
            f"Device-side zero-filled transform (`data.transform_on=device`), multi-coil demo "
            f"slices: {transform:.0f} slices/s.",
            "",
            f"Multi-coil TV ({size_name} size, ESPIRiT maps, configured lam, one volume as the "
            f"evaluation runs it): {tv[4]:.3f} s a slice at 4x, {tv[8]:.3f} s at 8x. BART 0.8 "
            "(Debian's, CPU only, its own ESPIRiT maps) took 12.5 and 13.6 s a release slice on a "
            "2-core AMD EPYC (docs/results.md).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / "data" / "demo")
    parser.add_argument("--size", choices=sorted(SIZES), default="release")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(run(args.root.resolve(), args.size, args.device, args.repeats))


if __name__ == "__main__":
    main()
