"""Memory soak: many epochs of the data path (and optionally training steps) over demo files,
with the resident memory of the process and its workers sampled after every epoch.

    .venv/bin/python scripts/soak.py [--root data/demo] [--epochs 30] [--train]

Growth is (last sample - first sample) / first sample; the first sample is taken after epoch 1,
once every file is open and the allocator has warmed up. fastMRI issue #215 saw h5py leak here.
"""

import argparse
from pathlib import Path

import psutil
import torch
from fastmri.data.subsample import RandomMaskFunc
from omegaconf import OmegaConf

from mri_recon.data.dataset import SliceDataset, split_folder
from mri_recon.data.loaders import build_loader
from mri_recon.data.transforms import ZeroFilledTransform
from mri_recon.models.unet import Unet
from mri_recon.runtime import Runtime
from mri_recon.schedulers import Horizon, constant
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step


def resident_mb() -> float:
    """Resident memory of this process and its children (DataLoader workers), in MB."""
    process = psutil.Process()
    processes = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20


def soak(root: Path, challenge: str, epochs: int, num_workers: int, train: bool) -> list[float]:
    """Resident MB after each epoch."""
    transform = ZeroFilledTransform(
        challenge, RandomMaskFunc([0.08, 0.04], [4, 8]), fixed_masks=False
    )
    dataset = SliceDataset(split_folder(root, challenge, "train"), challenge, transform)
    loader = build_loader(
        dataset,
        OmegaConf.create({"batch_size": 4, "num_workers": num_workers}),
        torch.utils.data.RandomSampler(dataset),
    )
    model = Unet(chans=8, num_pool_layers=3)
    optimizer = torch.optim.Adam(model.parameters())
    state = TrainState(model, optimizer, constant(optimizer, Horizon(0), 0), config={})
    runtime = Runtime.create("cpu", "32")
    samples = []
    for _ in range(epochs):
        for batch in loader:
            if train:  # the step training runs
                train_step(state, batch, runtime, clip=1.0)
        samples.append(resident_mb())
    return samples


def growth(samples: list[float]) -> float:
    return (samples[-1] - samples[0]) / samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--challenge", default="singlecoil")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--train", action="store_true", help="also run a small U-Net training step per batch"
    )
    args = parser.parse_args()
    samples = soak(args.root, args.challenge, args.epochs, args.num_workers, args.train)
    print(
        f"resident MB after epochs 1..{args.epochs}: {samples[0]:.0f} -> {samples[-1]:.0f} "
        f"(growth {100 * growth(samples):+.2f}%)"
    )


if __name__ == "__main__":
    main()
