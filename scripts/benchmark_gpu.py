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
from benchmark_varnet import configured, fastmri_step, synthetic_batch
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
# (label, chans, precision, deterministic, compile) of our U-Net's steps; the compiled ones are
# timed last (their compilation takes the longest).
UNET_VARIANTS = (
    ("ours (chans 16), fp32", 16, "32", False, False),
    ("ours (chans 16), precision auto", 16, "auto", False, False),
    ("ours (chans 16), precision auto, deterministic", 16, "auto", True, False),
    ("ours chans 32, precision auto", 32, "auto", False, False),
)
UNET_COMPILED = (
    ("ours (chans 16), precision auto, compiled", 16, "auto", False, True),
    (
        "ours (chans 16), precision auto, compiled reduce-overhead",
        16,
        "auto",
        False,
        "reduce-overhead",
    ),
)
# (label, settings, precision, deterministic, compile) of our VarNet's steps.
VARNET_VARIANTS = (
    ("ours, same settings, fp32", LAYER_FOR_LAYER, "32", False, False),
    ("ours, same settings, precision auto", LAYER_FOR_LAYER, "auto", False, False),
    ("ours, same settings, precision auto, deterministic", LAYER_FOR_LAYER, "auto", True, False),
    (
        "ours, same + crop_readout, precision auto",
        {**LAYER_FOR_LAYER, "crop_readout": True},
        "auto",
        False,
        False,
    ),
)
VARNET_COMPILED = (
    ("ours, same settings, precision auto, compiled", LAYER_FOR_LAYER, "auto", False, True),
)


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


def unet_batch(size: tuple, device: str) -> Sample:
    """A (B, 1, H, W) batch of random images and targets, on ``device``."""
    batch_size, height, width = size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 1, height, width, generator=generator)
    return on_device(Sample(images, torch.randn(images.shape, generator=generator)), device)


def fastmri_unet_row(batch: Sample, device: str, repeats: int) -> tuple[str, dict]:
    """fastMRI's Unet step (chans 32, RMSprop, fp32, as its recipe trains it)."""
    fp32 = Runtime.create(device, "32", False)
    theirs = fp32.place(FastmriUnet(1, 1, 32, 4))
    optimizer = torch.optim.RMSprop(theirs.parameters(), lr=1e-3)
    state = TrainState(theirs, optimizer, constant(optimizer, Horizon(0), 0), {}, L1Loss())
    step = functools.partial(train_step, state, batch, fp32, clip=None)
    return "fastmri.models.Unet chans 32, RMSprop, fp32", timed(step, device, repeats, False)


def variant_runtime(device: str, precision: str, deterministic: bool) -> Runtime:
    """The runtime of one variant: fp32 in the default layout, or the given precision in
    ``auto``'s (channels_last on CUDA); cuDNN autotuning unless ``deterministic``."""
    layout = False if precision == "32" else "auto"
    return Runtime.create(device, precision, layout, deterministic)


def our_unet_rows(
    batch: Sample, device: str, repeats: int, variants: tuple
) -> list[tuple[str, dict]]:
    """Our U-Net's step in each of ``variants`` (label, chans, precision, deterministic,
    compile)."""
    rows = []
    for label, chans, precision, deterministic, compile in variants:
        runtime = variant_runtime(device, precision, deterministic)
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


def varnet_rows(
    size: tuple, device: str, repeats: int, variants: tuple, with_fastmri: bool
) -> list[tuple[str, dict]]:
    """VarNet steps on one slice: fastMRI's at its defaults first (``with_fastmri``), then ours
    in each of ``variants`` (label, settings, precision, deterministic, compile)."""
    torch.manual_seed(0)
    batch = on_device(synthetic_batch(size), device)
    rows = []
    if with_fastmri:
        Runtime.create(device, "32", False)  # cuDNN autotuning, as our rows have it
        label = "fastmri.models.VarNet (12 cascades, chans 18, sens chans 8), fp32"
        rows.append((label, timed(fastmri_varnet_step(batch, device), device, repeats, False)))
    for label, settings, precision, deterministic, compile in variants:
        runtime = variant_runtime(device, precision, deterministic)
        torch.manual_seed(0)
        step = our_step(VarNet(**settings), StructuralLoss(), batch, runtime, compile)
        rows.append((label, timed(step, device, repeats, bool(compile))))
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


def table(rows: list[tuple[str, dict]], slices: int, reference_ms: float) -> list[str]:
    """Markdown rows: ms a step, slices/s, the ratio to fastMRI's step, peak memory."""
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
        ratio = reference_ms / value["ms"]
        lines.append(f"| {name} | {value['ms']:.1f} | {rate:.0f} | {ratio:.2f}x | {memory} |")
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


def unet_section(size: tuple, device: str, repeats: int, fastmri_ms: dict) -> list[str]:
    """U-Net steps (eager) beside fastMRI's, and the default step's share of the bf16 rate."""
    batch = unet_batch(size, device)
    rows = [fastmri_unet_row(batch, device, repeats)]
    rows += our_unet_rows(batch, device, repeats, UNET_VARIANTS)
    fastmri_ms["unet"] = rows[0][1]["ms"]
    tflops = unet_tflops(size, device, dict(rows)["ours (chans 16), precision auto"]["ms"])
    matmul = bf16_matmul_gflops(device) / 1000
    return [
        f"### U-Net steps, {size[0]} x {size[1]}x{size[2]} slices",
        "",
        *table(rows, size[0], fastmri_ms["unet"]),
        "",
        f"Our default U-Net's step (precision auto) runs at {tflops:.2f} TFLOP/s, "
        f"{100 * tflops / matmul:.1f}% of this GPU's {matmul:.1f} TFLOP/s bf16 matrix product "
        f"({4 * MM_SIZE}x{4 * MM_SIZE}).",
    ]


def experiment_variants() -> tuple:
    """``experiment=varnet_multicoil``'s network (its config, composed) as it trains, as
    configured, with the center lines' coil images as maps, started from the measured k-space,
    and with fastMRI's gradient data consistency (variants as in VARNET_VARIANTS)."""
    network = configured()
    described = (
        f"{network['sens_maps']} maps, {network['start']} start, "
        f"{network['data_consistency']} data consistency"
    )
    networks = (
        (f"experiment=varnet_multicoil's network ({described}), precision auto", network),
        ("the same with model.sens_maps=center_lines", {**network, "sens_maps": "center_lines"}),
        ("the same with model.start=zero_filled", {**network, "start": "zero_filled"}),
        (
            "the same with model.data_consistency=gradient",
            {**network, "data_consistency": "gradient"},
        ),
    )
    return tuple((label, settings, "auto", True, False) for label, settings in networks)


def varnet_section(size: tuple, device: str, repeats: int, fastmri_ms: dict) -> list[str]:
    """VarNet steps (eager) beside fastMRI's, and inference seconds per slice."""
    variants = VARNET_VARIANTS + experiment_variants()
    rows = varnet_rows(size, device, repeats, variants, with_fastmri=True)
    fastmri_ms["varnet"] = rows[0][1]["ms"]
    ours_s, theirs_s = varnet_seconds_per_slice(size, device)
    return [
        f"### VarNet steps, one slice of {size[0]} coils, {size[1]}x{size[2]} k-space",
        "",
        *table(rows, 1, fastmri_ms["varnet"]),
        "",
        f"Inference seconds per slice: ours (same settings, precision auto) {ours_s:.3f}, "
        f"fastmri.models.VarNet (fp32) {theirs_s:.3f} ({theirs_s / ours_s:.2f}x).",
    ]


def tv_section(root: Path, size_name: str, device: str) -> list[str]:
    """Multi-coil TV's seconds a slice beside BART's CPU figure."""
    tv = tv_seconds_per_slice(root, size_name, device)
    return [
        f"### Multi-coil TV, {size_name} size",
        "",
        f"ESPIRiT maps and the configured lam, one volume as the evaluation runs it: "
        f"{tv[4]:.3f} s a slice at 4x, {tv[8]:.3f} s at 8x. BART 0.8 (Debian's, CPU only, its "
        "own ESPIRiT maps) took 12.5 and 13.6 s a release slice on a 2-core AMD EPYC "
        "(docs/results.md).",
    ]


def compiled_section(sizes: dict, device: str, repeats: int, fastmri_ms: dict) -> list[str]:
    """The compiled U-Net and VarNet steps, as ratios to fastMRI's eager steps (timed here
    where the unet or varnet part did not run)."""
    batch = unet_batch(sizes["unet"], device)
    if "unet" not in fastmri_ms:
        fastmri_ms["unet"] = fastmri_unet_row(batch, device, repeats)[1]["ms"]
    unet = our_unet_rows(batch, device, repeats, UNET_COMPILED)
    with_fastmri = "varnet" not in fastmri_ms
    varnet = varnet_rows(sizes["varnet"], device, repeats, VARNET_COMPILED, with_fastmri)
    if with_fastmri:
        fastmri_ms["varnet"] = varnet.pop(0)[1]["ms"]
    return [
        "### Compiled steps (torch.compile; the same sizes, ratios to fastMRI's eager steps)",
        "",
        *table(unet, sizes["unet"][0], fastmri_ms["unet"]),
        "",
        *table(varnet, 1, fastmri_ms["varnet"]),
    ]


PARTS = ("unet", "varnet", "tv", "transform", "compiled")


def run(root: Path, size_name: str, device: str, repeats: int, chosen: list[str]) -> None:
    """Print the GPU section of docs/gpu.md (markdown), one part at a time as it is measured
    (``chosen`` of ``PARTS``); a part that fails says so and the next still runs."""
    sizes = SIZES[size_name]
    fastmri_ms: dict[str, float] = {}
    parts = (
        ("unet", lambda: unet_section(sizes["unet"], device, repeats, fastmri_ms)),
        ("varnet", lambda: varnet_section(sizes["varnet"], device, repeats, fastmri_ms)),
        ("tv", lambda: tv_section(root, size_name, device)),
        (
            "transform",
            lambda: [
                "Device-side zero-filled transform (`data.transform_on=device`), multi-coil "
                f"demo slices: {benchmark_data.device_transform_rate(root, 'multicoil')[0]:.0f} "
                "slices/s."
            ],
        ),
        ("compiled", lambda: compiled_section(sizes, device, repeats, fastmri_ms)),
    )
    for name, part in parts:
        if name not in chosen:
            continue
        try:
            lines = part()
        except Exception as error:  # noqa: BLE001 - reported, the next part still runs
            first = (str(error).splitlines() or [""])[0][:200]
            lines = [f"{name}: failed: {type(error).__name__}: {first}"]
        print("\n".join(lines) + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=PROJECT_DIR / "data" / "demo")
    parser.add_argument("--size", choices=sorted(SIZES), default="release")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--parts", default="all", help=f"all, or some of {', '.join(PARTS)}")
    args = parser.parse_args()
    chosen = list(PARTS) if args.parts == "all" else args.parts.split(",")
    if set(chosen) - set(PARTS):
        parser.error(f"--parts: expected all or some of {', '.join(PARTS)}, got {args.parts}")
    run(args.root.resolve(), args.size, args.device, args.repeats, chosen)


if __name__ == "__main__":
    main()
