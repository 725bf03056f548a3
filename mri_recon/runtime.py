"""Where and how the model runs: device, precision, memory format, compilation, seeds.

Every entry point (training, evaluation, TV tuning, the benchmarks) builds one ``Runtime`` and
hands it to the code that moves tensors to the device and runs the model.
"""

import os
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
# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA) from which its kernels use bf16 instructions.
BF16_ISA_LEVELS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL")


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16), as torch
    itself detects it, and oneDNN may use them: ``ONEDNN_MAX_CPU_ISA=AVX2`` (how an AVX2-only
    CPU is emulated) caps its kernels below bf16. Without either, bf16 is emulated and slower
    than fp32."""
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    if not capped.upper().startswith(BF16_ISA_LEVELS):
        return False
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def check_precision(precision: object) -> None:
    """Raise UserError unless ``precision`` is auto, 32 or bf16."""
    if str(precision) not in PRECISIONS:
        raise UserError(f"trainer.precision: expected auto, 32 or bf16, got {precision!r}")


def check_channels_last(setting: object) -> None:
    """Raise UserError unless ``setting`` is auto, true or false (not 0/1)."""
    if setting != "auto" and not isinstance(setting, bool):
        raise UserError(f"trainer.channels_last: expected auto, true or false, got {setting!r}")


def choose_bf16(precision: str, device: torch.device) -> tuple[bool, str]:
    """Whether to autocast to bf16, and why. ``auto``: on CUDA GPUs that support bf16 and on
    CPUs with native bf16 matrix units; fp32 elsewhere. ``32`` and ``bf16`` force it."""
    check_precision(precision)
    if precision != "auto":
        return precision == "bf16", f"precision={precision}"
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        return native, f"precision=auto, {'a' if native else 'no'} bf16-capable GPU"
    if device.type == "cpu":
        native = cpu_has_native_bf16()
        why = "has" if native else "has no"
        return native, f"precision=auto, this CPU {why} native bf16 (AMX or AVX512-BF16)"
    return False, f"precision=auto, fp32 on {device.type}"


def choose_channels_last(setting: bool | str, device: torch.device) -> bool:
    """channels_last activations: ``auto`` means on CUDA (cuDNN's fast layout) and not on CPUs,
    where it measured slower with GroupNorm, most of all under bf16 (docs/benchmarks.md)."""
    check_channels_last(setting)
    return device.type == "cuda" if setting == "auto" else setting


@dataclass(frozen=True)
class Runtime:
    """The device a process computes on and how: bf16 autocast, channels_last activations."""

    device: torch.device
    bf16: bool
    channels_last: bool
    reason: str = ""  # why bf16 is on or off, for the log

    @classmethod
    def create(cls, device: str, precision: str, channels_last: bool | str = "auto") -> "Runtime":
        """From the config's ``device``, ``precision`` and ``channels_last`` (each rank its own
        GPU under torchrun).

        On CUDA it also makes that GPU current and lets cuDNN pick its fastest kernels.
        """
        chosen = distributed.device_for(select_device(device))
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
            torch.backends.cudnn.benchmark = True
        bf16, reason = choose_bf16(str(precision), chosen)
        return cls(chosen, bf16, choose_channels_last(channels_last, chosen), reason)

    def describe(self) -> str:
        """For the log, e.g. ``cpu, bf16 autocast (precision=auto, this CPU has ...)``."""
        layout = ", channels_last" if self.channels_last else ""
        precision = "bf16 autocast" if self.bf16 else "fp32"
        return f"{self.device}, {precision}{layout} ({self.reason})"

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
        when asked (a model with ``compile_parts`` compiles its own parts in place). Its
        parameters are ``model``'s, so checkpoints save ``model`` itself."""
        if compile and hasattr(model, "compile_parts"):
            model.compile_parts()
            compile = False
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
