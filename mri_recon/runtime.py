"""Where and how the model runs: device, precision, memory format, compilation, seeds.

Every entry point (training, evaluation, TV tuning, the benchmarks) builds one ``Runtime`` and
hands it to the code that moves tensors to the device and runs the model.
"""

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mri_recon import distributed
from mri_recon.errors import UserError

PRECISIONS = ("auto", "32", "bf16")


def select_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; any other name is used as given."""
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"trainer.device={name}: CUDA is not available on this machine")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: ``auto`` means on CUDA only."""
    if precision not in PRECISIONS:
        raise UserError(f"trainer.precision: expected auto, 32 or bf16, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


@dataclass(frozen=True)
class Runtime:
    """The device a process computes on and how: bf16 autocast, channels_last activations."""

    device: torch.device
    bf16: bool
    channels_last: bool

    @classmethod
    def create(cls, device: str, precision: str) -> "Runtime":
        """From the config's ``device`` and ``precision`` (each rank its own GPU under torchrun).

        On CUDA it also makes that GPU current and lets cuDNN pick its fastest kernels.
        """
        chosen = distributed.device_for(select_device(device))
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
            torch.backends.cudnn.benchmark = True
        return cls(chosen, uses_bf16(str(precision), chosen), chosen.type == "cuda")

    def describe(self) -> str:
        """For the log, e.g. ``cuda:0 with bf16 autocast``."""
        return f"{self.device}{' with bf16 autocast' if self.bf16 else ''}"

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on this device when enabled, else a no-op context."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) model input on this device, in its memory format."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def place(self, model: nn.Module) -> nn.Module:
        """The model on this device, in its memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def training_module(self, model: nn.Module, compile: bool) -> nn.Module:
        """What the training step calls: ``model``, wrapped in DDP under torchrun and compiled
        when asked. Its parameters are ``model``'s, so checkpoints save ``model`` itself."""
        wrapped = model
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        return torch.compile(wrapped) if compile else wrapped


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and masks, so a resumed run replays them exactly."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
