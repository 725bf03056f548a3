"""Where and how the model runs: device, precision, memory format, compilation, seeds.

Every entry point (training, evaluation, TV tuning, the benchmarks) builds one ``Runtime`` and
hands it to the code that moves tensors to the device and runs the model.
"""

import logging
import os
import random
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mri_recon import distributed
from mri_recon.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "32", "bf16")
# torch.compile's modes (trainer.compile: true is "default").
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# oneDNN's ISA levels (ONEDNN_MAX_CPU_ISA) from which its kernels use bf16 instructions.
BF16_ISA_LEVELS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL")


def select_device(name: str) -> torch.device:
    """The device this process computes on. ``auto`` picks CUDA, then MPS, then the CPU.

    A CUDA device always gets an index (``torch.cuda.set_device`` and DDP need one): ``auto``
    and ``cuda`` mean this process's own GPU, the ``LOCAL_RANK``-th under torchrun or Slurm,
    else GPU 0 of those CUDA_VISIBLE_DEVICES shows; ``cuda:N`` is GPU N in a single process
    (under torchrun every rank takes its own). A name that cannot work is a UserError.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return cuda_device(None, name)
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"device={name}: expected auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name}: CUDA is not available on this machine")
        return cuda_device(device.index, name)
    return device


def cuda_device(index: int | None, name: str) -> torch.device:
    """``cuda:<index>``, or this process's own GPU (``index`` None, or several processes),
    checked against the GPUs this process sees."""
    count = torch.cuda.device_count()
    processes = distributed.local_world_size()
    if processes > 1 and processes > count:
        raise UserError(
            f"device={name}: {processes} processes were started on this node but it has "
            f"{count} CUDA GPU(s): start at most {count} (torchrun --nproc_per_node={count}, "
            "or hydra.launcher.gpus_per_node), or train on the CPU with trainer.device=cpu"
        )
    if processes > 1 or index is None:
        index = distributed.local_rank()
    if index >= count:
        raise UserError(
            f"device={name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


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


def check_compile(setting: object) -> None:
    """Raise UserError unless ``setting`` is true, false or a ``torch.compile`` mode."""
    if not isinstance(setting, bool) and setting not in COMPILE_MODES:
        raise UserError(
            f"trainer.compile: expected true, false or one of {', '.join(COMPILE_MODES)}, "
            f"got {setting!r}"
        )


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


# cuBLAS's setting for deterministic matrix products (CUDA 10.2 and later); read when cuBLAS
# starts, so it is set before the first product on the GPU.
CUBLAS_DETERMINISTIC = ":4096:8"
# How torch's warn_only mode names an operation without a deterministic kernel.
NONDETERMINISTIC = " does not have a deterministic implementation"


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels (``trainer.deterministic``), so that a resumed run ends bit for bit
    like an uninterrupted one on a GPU too: torch's deterministic algorithms, cuDNN without
    autotuning, cuBLAS's fixed workspace. Without it cuDNN autotunes on CUDA (faster).

    An operation with no deterministic kernel on the device still runs; the log names it once
    (``log_nondeterministic_operations``).
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
        log_nondeterministic_operations()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # Filling new tensors with NaN only finds reads of memory never written; it costs time.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def log_nondeterministic_operations() -> None:
    """Route torch's warning about an operation without a deterministic kernel to the log, once
    per operation, with what it means for resuming; other warnings are shown as before."""
    show = warnings.showwarning
    if getattr(show, "logs_nondeterministic", False):
        return
    seen: set[str] = set()

    def show_or_log(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = str(message)
        if NONDETERMINISTIC not in text:
            return show(message, category, filename, lineno, file, line)
        operation = text.split(NONDETERMINISTIC)[0]
        if operation not in seen:
            seen.add(operation)
            log.warning(
                "%s has no deterministic kernel on this device: a resumed run restores weights, "
                "optimizer, data order and random states exactly, but this operation may round "
                "differently, so it ends close to an uninterrupted run, not bit for bit",
                operation,
            )

    show_or_log.logs_nondeterministic = True
    warnings.showwarning = show_or_log


@dataclass(frozen=True)
class Runtime:
    """The device a process computes on and how: bf16 autocast, channels_last activations."""

    device: torch.device
    bf16: bool
    channels_last: bool
    reason: str = ""  # why bf16 is on or off, for the log

    @classmethod
    def create(
        cls,
        device: str,
        precision: str,
        channels_last: bool | str = "auto",
        deterministic: bool = False,
    ) -> "Runtime":
        """From the config's ``device``, ``precision``, ``channels_last`` and ``deterministic``
        (each rank its own GPU under torchrun or Slurm).

        On CUDA it also makes that GPU current; cuDNN picks its fastest kernels (autotuning)
        unless ``deterministic`` asks for kernels that give the same bits on every run.
        """
        chosen = select_device(str(device))
        set_determinism(deterministic, chosen)
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
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

    def training_module(self, model: nn.Module, compile: bool | str) -> nn.Module:
        """What the training step calls: ``model``, wrapped in DDP under torchrun and compiled
        when asked (``trainer.compile``: true, or a ``torch.compile`` mode such as
        ``reduce-overhead``, CUDA graphs; a model with ``compile_parts`` compiles its own parts
        in place). Its parameters are ``model``'s, so checkpoints save ``model`` itself."""
        check_compile(compile)
        mode = None if compile is True else compile
        if compile and hasattr(model, "compile_parts"):
            model.compile_parts(mode)
            compile = False
        wrapped = model
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids)
        return torch.compile(wrapped, mode=mode) if compile else wrapped


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and masks, so a resumed run replays them exactly."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
