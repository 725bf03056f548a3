"""The CUDA branch of device selection, run on a CPU-only machine with torch's CUDA calls
replaced, and the determinism settings of ``trainer.deterministic``."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mri_recon import runtime
from mri_recon.config import PROJECT_DIR
from mri_recon.errors import UserError
from mri_recon.runtime import Runtime, select_device
from mri_recon.training.settings import check_config

from .conftest import compose_config

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Two bf16-capable GPUs. ``torch.cuda.set_device`` itself runs (it refuses a device without
    an index, as on a real GPU); only its last call into the driver is replaced, recording the
    GPU it was given."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch._C, "_cuda_setDevice", chosen.append, raising=False)
    for variable in TORCHRUN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return chosen


@pytest.fixture(autouse=True)
def restore_determinism() -> None:
    """Runtime.create sets process-wide flags: leave them as this test found them."""
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[2:]
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def torchrun_rank(monkeypatch: pytest.MonkeyPatch, local_rank: int, processes: int) -> None:
    """The environment torchrun gives one of ``processes`` ranks on one node."""
    for variable, value in zip(
        TORCHRUN_VARIABLES, (processes, local_rank, local_rank, processes), strict=True
    ):
        monkeypatch.setenv(variable, str(value))


@pytest.mark.parametrize("name", ["auto", "cuda", "cuda:0"])
def test_the_default_device_on_a_cuda_machine_is_an_indexed_gpu(
    fake_cuda: list[int], name: str
) -> None:
    chosen = Runtime.create(name, "auto")
    assert chosen.device == torch.device("cuda", 0) and fake_cuda == [0]
    assert chosen.bf16 and chosen.channels_last  # what auto picks on a bf16-capable GPU


def test_a_named_gpu_is_used_as_named(fake_cuda: list[int]) -> None:
    assert Runtime.create("cuda:1", "32").device == torch.device("cuda", 1)
    assert fake_cuda == [1]


@pytest.mark.parametrize("name", ["auto", "cuda", "cuda:0"])
def test_each_torchrun_rank_takes_its_own_gpu(
    fake_cuda: list[int], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    torchrun_rank(monkeypatch, local_rank=1, processes=2)
    assert Runtime.create(name, "auto").device == torch.device("cuda", 1)
    assert fake_cuda == [1]


def test_more_processes_than_gpus_is_one_line(
    fake_cuda: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    torchrun_rank(monkeypatch, local_rank=3, processes=4)
    with pytest.raises(UserError, match="4 processes were started on this node but it has 2") as e:
        Runtime.create("auto", "auto")
    assert "--nproc_per_node=2" in str(e.value) and "\n" not in str(e.value)
    assert fake_cuda == []


@pytest.mark.parametrize(
    "name, message",
    [("cuda:2", "this machine has 2 CUDA GPU"), ("gpu", "expected auto, cpu, cuda, cuda:N")],
)
def test_a_device_that_cannot_work_is_one_line(
    fake_cuda: list[int], name: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        select_device(name)


def test_cuda_asked_for_without_cuda_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="device=cuda: CUDA is not available"):
        select_device("cuda")


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_kernels_on_cuda(
    fake_cuda: list[int], monkeypatch: pytest.MonkeyPatch, deterministic: bool
) -> None:
    """deterministic: torch's deterministic algorithms, cuDNN without autotuning, cuBLAS's fixed
    workspace set before CUDA computes anything; false: cuDNN autotunes."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    Runtime.create("auto", "auto", deterministic=deterministic)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.backends.cudnn.deterministic == deterministic
    assert torch.backends.cudnn.benchmark == (not deterministic)
    expected = runtime.CUBLAS_DETERMINISTIC if deterministic else None
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == expected


def test_an_operation_without_a_deterministic_kernel_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mri_recon")
    Runtime.create("cpu", "32", deterministic=True)
    values = torch.zeros(4)
    for _ in range(2):  # put_ without accumulation has no deterministic kernel, on CPUs too
        values.put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
    lines = [r.getMessage() for r in caplog.records if "no deterministic kernel" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("put_ has no deterministic kernel")
    assert "not bit for bit" in lines[0]


def test_training_is_deterministic_unless_asked_otherwise() -> None:
    assert compose_config("train", []).trainer.deterministic is True
    cfg = compose_config("train", ["trainer.deterministic=maybe"])
    with pytest.raises(UserError, match="trainer.deterministic: expected true or false"):
        check_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_a_gpu_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "scripts" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: gpu-check: torch") and result.stderr.count("\n") == 1


def test_an_offline_install_without_wheels_is_one_line(tmp_path: Path) -> None:
    """make install WHEELS=DIR with no wheels in DIR stops before making anything."""
    result = subprocess.run(
        ["make", "-C", str(PROJECT_DIR), "install", f"WHEELS={tmp_path}", f"VENV={tmp_path}/venv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and not (tmp_path / "venv").exists()
    assert f"WHEELS={tmp_path}: no wheels there (make them with 'make wheels'" in result.stderr


def test_an_offline_install_reaches_the_pytorch_of_a_venv_python(tmp_path: Path) -> None:
    """make install WHEELS=DIR PYTHON=P, where P is itself a virtual environment's python (a GPU
    image's /opt/.../.venv): the new venv imports P's torch (--system-site-packages alone would
    reach only the base interpreter's packages) and the install goes on to the wheels."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_text("not a wheel")  # stops pip after the check
    venv = tmp_path / "venv"
    result = subprocess.run(
        [
            "make",
            "-C",
            str(PROJECT_DIR),
            "install",
            f"WHEELS={wheels}",
            f"VENV={venv}",
            f"PYTHON={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "has no PyTorch to build on" not in result.stderr, result.stderr
    assert "broken-1.0" in result.stdout + result.stderr and result.returncode != 0
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
    )
    assert imported.stdout.strip() == torch.__version__


def test_gpu_check_reports_how_far_a_stopped_suite_got(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PROJECT_DIR / "scripts"))
    import gpu_check

    stopped = "bringing up nodes...\n\n" + "." * 72 + " [ 22%]\n....F..E.s [ 45%]\n"
    summary = gpu_check.suite_summary(gpu_check.Stage("suite", "timed out", 240.0, stopped))
    assert summary == ["timed out at 45% of the tests, 2 failed or errors so far"]
    finished = gpu_check.Stage("suite", "passed", 84.0, "....\n105 passed in 84.18s\n")
    assert gpu_check.suite_summary(finished) == ["`105 passed in 84.18s`"]
