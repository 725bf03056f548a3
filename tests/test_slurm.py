"""Sweeps and multi-process jobs through Hydra's Submitit launcher, with its local executor
(real processes, as Slurm would start them): configs/hydra/launcher/{local,slurm}.yaml."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from .conftest import BACKEND, compose_config, run_cli, train_in_process, two_process_device


def launcher_args(tiny_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "hydra/launcher=local",
        "debug=tiny",
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *extra,
    ]


def test_slurm_launcher_config_composes_with_its_keys() -> None:
    cfg = compose_config(
        "train",
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2"],
        hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.tasks_per_node) == ("gpu", 2, 1)
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0


def test_a_two_job_sweep_runs_through_the_launcher(tiny_root: Path, tmp_path: Path) -> None:
    run_cli(
        "mri-recon-train",
        *launcher_args(tiny_root, tmp_path, "optimizer.lr=1e-3,3e-4", "trainer.max_epochs=1"),
    )
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    for job, lr in (("0", 1e-3), ("1", 3e-4)):
        assert json.loads((sweep / job / "metrics.json").read_text())["hparams"]["lr"] == lr


def test_a_two_task_job_is_one_ddp_run(tiny_root: Path, tmp_path: Path) -> None:
    run_cli(
        "mri-recon-train",
        *launcher_args(tiny_root, tmp_path, "hydra.launcher.tasks_per_node=2"),
        *two_process_device("trainer.device"),
    )
    run = tmp_path / "sweep" / "0"
    assert f"process group: rank 0 of 2 ({BACKEND})" in (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and 0 < metrics["val"]["SSIM"]["mean"] <= 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == sorted(["best.pt", "last.pt"])


def task_processes(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The Submitit task processes (python -m submitit.core._submit) below the launcher."""
    children = psutil.Process(launcher.pid).children(recursive=True)
    return [p for p in children if "submitit.core._submit" in " ".join(p.cmdline())]


def test_a_preempted_job_is_requeued_and_ends_as_if_uninterrupted(
    tiny_root: Path, tmp_path: Path
) -> None:
    training = [
        "trainer.max_epochs=4",
        "trainer.checkpoint_every_n_steps=1",
        "model.drop_prob=0.1",
        "trainer.resume=auto",
    ]
    args = launcher_args(tiny_root, tmp_path, *training)
    last = tmp_path / "sweep" / "0" / "checkpoints" / "last.pt"
    launcher = subprocess.Popen(
        [str(Path(sys.executable).parent / "mri-recon-train"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not last.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for task in task_processes(launcher):  # what Slurm does before a preemption or time limit
        task.send_signal(signal.SIGUSR2)
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    assert "SIGUSR2 received" in logs and "Requeued job" in logs

    reference = train_in_process(
        tmp_path / "reference",
        "debug=tiny",
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *training,
    )
    requeued = torch.load(last, weights_only=False)
    expected = torch.load(tmp_path / "reference" / "checkpoints" / "last.pt", weights_only=False)
    for name, tensor in expected["model"].items():
        assert torch.equal(requeued["model"][name], tensor), name
    assert json.loads((last.parents[1] / "metrics.json").read_text())["val"] == reference.metrics


def test_evaluation_runs_as_a_two_task_job(trained_run: Path, tmp_path: Path) -> None:
    run_cli(
        "mri-recon-eval",
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.tasks_per_node=2",
        f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *two_process_device("device"),
    )
    run = tmp_path / "sweep" / "0"
    assert f"process group: rank 0 of 2 ({BACKEND})" in (run / "evaluate.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_volumes"] == 2 and set(metrics["results"]) == {"4", "8"}
