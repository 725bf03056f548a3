"""Precision, memory format and compilation: chosen per device, every path run on the CPU."""

import math
from pathlib import Path

import pytest
import torch

from mri_recon import runtime
from mri_recon.checkpoints import load_checkpoint
from mri_recon.errors import UserError
from mri_recon.models.varnet import VarNet
from mri_recon.runtime import Runtime
from mri_recon.training.settings import check_config

from .conftest import compose_config, train_in_process


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bf16_exactly_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    chosen = Runtime.create("cpu", "auto")
    assert chosen.bf16 == native
    assert ("has native bf16" if native else "has no native bf16") in chosen.describe()
    assert not Runtime.create("cpu", "32").bf16  # 32 forces fp32, bf16 forces bf16
    assert Runtime.create("cpu", "bf16").bf16


@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_an_isa_cap_below_bf16_means_no_native_bf16(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # How an AVX2-only CPU is emulated on a newer one: oneDNN's kernels capped at AVX2.
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setenv(variable, "avx2")
    assert not runtime.cpu_has_native_bf16()
    assert not Runtime.create("cpu", "auto").bf16
    for level in ("AVX512_CORE_AMX", "avx512_core_bf16", "ALL"):
        monkeypatch.setenv(variable, level)
        assert runtime.cpu_has_native_bf16()


def test_channels_last_is_off_on_cpu_unless_asked() -> None:
    assert not Runtime.create("cpu", "32").channels_last
    forced = Runtime.create("cpu", "32", True)
    assert forced.channels_last
    assert forced.images(torch.zeros(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


def test_bad_precision_or_memory_format_is_a_clear_error() -> None:
    for override, key in (("trainer.precision=16", "precision"), ("trainer.channels_last=1", "")):
        cfg = compose_config("train", [override])
        with pytest.raises(UserError, match=f"trainer.{key or 'channels_last'}: expected"):
            check_config(cfg)


def test_bf16_channels_last_compiled_training_runs_on_cpu(tiny_root: Path, tmp_path: Path) -> None:
    # The GPU fast path's settings, on the CPU, against the same run in plain fp32: it must train
    # alike (bf16 rounding apart), not merely run. A step with a NaN loss is skipped, so a
    # kernel that returns NaN shows here as a different loss.
    data = ["debug=tiny", f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}"]
    data.append("trainer.max_epochs=1")
    fast = ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=true"]
    result = train_in_process(tmp_path / "run", *data, *fast)
    plain = train_in_process(tmp_path / "plain", *data, "trainer.precision=32")
    assert result.stopped_by is None
    assert math.isfinite(result.metrics["loss"])
    assert result.metrics["loss"] == pytest.approx(plain.metrics["loss"], rel=0.02)
    assert result.metrics["SSIM"]["mean"] == pytest.approx(plain.metrics["SSIM"]["mean"], abs=0.01)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["progress"]["global_step"] == 5
    assert all(t.dtype == torch.float32 for t in state["model"].values())  # fp32 master weights
    assert not any(name.startswith("_orig_mod") for name in state["model"])  # the plain model


@pytest.mark.parametrize("setting, mode", [(True, None), ("reduce-overhead", "reduce-overhead")])
def test_compile_takes_torch_compiles_modes(
    monkeypatch: pytest.MonkeyPatch, setting: bool | str, mode: str | None
) -> None:
    """trainer.compile: true compiles in torch's default mode; a mode name (reduce-overhead:
    CUDA graphs, for small models on a GPU) is handed to torch.compile, for the VarNet's parts
    too."""
    modes, dynamic = [], []

    def compile_in_place(self: torch.nn.Module, mode: str | None = None, **kwargs: object) -> None:
        modes.append(mode)
        dynamic.append(kwargs.get("dynamic"))

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or model)
    monkeypatch.setattr(torch.nn.Module, "compile", compile_in_place)
    runtime = Runtime.create("cpu", "32")
    runtime.training_module(torch.nn.Conv2d(1, 1, 3), setting)
    runtime.training_module(VarNet(num_cascades=1, chans=4, sens_chans=0), setting)
    assert modes == [mode] * 2  # the U-Net, then the VarNet's one cascade U-Net
    assert dynamic == [False]  # each VarNet part for its own shapes
    cfg = compose_config("train", ["trainer.compile=fastest"])
    with pytest.raises(UserError, match="trainer.compile: expected true, false or one of default"):
        check_config(cfg)
