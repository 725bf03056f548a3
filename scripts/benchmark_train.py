"""Training throughput: ours vs the fastMRI recipe, on the same files, in the same run.

    .venv/bin/python scripts/benchmark_train.py [--root data/demo] [--steps 30]

Ours: SliceDataset + ZeroFilledTransform, GroupNorm U-Net, Adam, L1, gradient clipping (the
train.py step). fastMRI recipe: fastmri.data.SliceDataset + UnetDataTransform,
fastmri.models.Unet (InstanceNorm), RMSprop, L1, a plain loop. Same parameter count (chans 32,
4 pooling layers: 7.76 M), same batch size, same DataLoader workers, same masks (4x/8x mix).
"""

import argparse
import statistics
import time
from pathlib import Path

import fastmri.data
import torch
from fastmri.data.subsample import RandomMaskFunc
from fastmri.data.transforms import UnetDataTransform
from fastmri.models import Unet as FastmriUnet
from omegaconf import OmegaConf
from torch.nn import functional as F

from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.data.loaders import build_loader
from mri_recon.data.transforms import ZeroFilledTransform
from mri_recon.models.unet import Unet, count_parameters


def masks() -> RandomMaskFunc:
    return RandomMaskFunc([0.08, 0.04], [4, 8])


def slices_per_second(
    model, optimizer, loader, steps: int, clip: float | None, warmup: int = 3
) -> float:
    """Training slices per second over ``steps`` steps after ``warmup`` (data loading included)."""
    model.train()
    iterator = iter(loader)
    done, start = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        image, target = batch[0], batch[1]
        image = image if image.dim() == 4 else image.unsqueeze(1)
        target = target if target.dim() == 4 else target.unsqueeze(1)
        loss = F.l1_loss(model(image), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if step >= warmup:
            done += image.shape[0]
    return done / (time.perf_counter() - start)


def run(
    root: Path, steps: int, repeats: int, batch_size: int = 4, num_workers: int = 2
) -> tuple[str, float]:
    """The training section of docs/benchmarks.md, and our training slices/s."""
    folder = split_folder(root, "singlecoil", "train")
    loader_cfg = OmegaConf.create({"batch_size": batch_size, "num_workers": num_workers})
    ours_data = SliceDataset(
        folder, "singlecoil", ZeroFilledTransform("singlecoil", masks(), fixed_masks=False)
    )
    theirs_data = fastmri.data.SliceDataset(
        folder, "singlecoil", UnetDataTransform("singlecoil", masks(), use_seed=False)
    )
    ours_loader = build_loader(ours_data, loader_cfg, shuffle=True)
    theirs_loader = torch.utils.data.DataLoader(
        theirs_data, batch_size=batch_size, shuffle=True, num_workers=num_workers
    )

    ours_model, theirs_model = (
        Unet(chans=32, num_pool_layers=4, norm="group"),
        FastmriUnet(1, 1, 32, 4),
    )
    ours_opt = torch.optim.Adam(ours_model.parameters(), lr=1e-3)
    theirs_opt = torch.optim.RMSprop(theirs_model.parameters(), lr=1e-3)
    ours_runs, theirs_runs = [], []
    for _ in range(repeats):  # interleaved
        ours_runs.append(slices_per_second(ours_model, ours_opt, ours_loader, steps, clip=1.0))
        theirs_runs.append(
            slices_per_second(theirs_model, theirs_opt, theirs_loader, steps, clip=None)
        )
    ours, theirs = statistics.median(ours_runs), statistics.median(theirs_runs)
    table = "\n".join(
        [
            f"Batch {batch_size}, {num_workers} DataLoader workers, {steps} steps after 3 warm-up steps, "
            f"median of {repeats} interleaved repeats, demo single-coil training files (128x128), "
            f"{count_parameters(ours_model):,} vs {count_parameters(theirs_model):,} parameters.",
            "",
            "| recipe | training slices/s | ratio |",
            "|---|---|---|",
            f"| ours (GroupNorm U-Net, Adam, our data path) | {ours:.2f} | {ours / theirs:.2f}x |",
            f"| fastMRI (fastmri Unet with InstanceNorm, RMSprop, SliceDataset + UnetDataTransform) | {theirs:.2f} | 1.00x |",
        ]
    )
    return table, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(run(args.root, args.steps, args.repeats)[0])


if __name__ == "__main__":
    main()
