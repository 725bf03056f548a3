"""Faults: SIGKILL/SIGTERM mid-training, NaN losses, damaged checkpoints, failing disks."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mri_recon.checkpoints import load_checkpoint
from mri_recon.errors import UserError
from mri_recon.evaluation.reports import write_volume
from mri_recon.evaluation.run import evaluate
from mri_recon.files import atomic_path
from mri_recon.training.checkpointing import save_checkpoint
from mri_recon.training.loop import TrainingDiverged

from .conftest import TINY_TRAIN, compose_config, run_cli, train_in_process


def train_args(tiny_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.root={tiny_root}",
        f"data.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *TINY_TRAIN,
        "trainer.max_epochs=3",
        "trainer.checkpoint_every_n_steps=1",
        "model.drop_prob=0.1",
        *extra,
    ]


def checkpoint_step(run_dir: Path) -> int:
    """The global step of the newest last.pt, -1 while there is none."""
    try:
        return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["progress"][
            "global_step"
        ]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


# `mri-recon-train` whose checkpoint writer signals its own process (or, with TARGET group, its
# whole process group: its DataLoader workers too, as Slurm signals a job step) once last.pt
# holds step AT_STEP: the signal lands at that step however fast the machine is (a signal sent
# from outside once the test saw the file could arrive after the last step, the run finished).
SIGNAL_AT_STEP = """
import os, sys
from mri_recon import train
from mri_recon.training import checkpointing

at_step, signum = int(sys.argv.pop(1)), int(sys.argv.pop(1))
target = sys.argv.pop(1)
sys.argv[0] = "mri-recon-train"
save = checkpointing.save_checkpoint

def save_then_signal(state, path):
    save(state, path)
    global at_step
    if path.name == "last.pt" and state["progress"]["global_step"] >= at_step:
        at_step = float("inf")  # once: a second stop signal would interrupt at once
        if target == "group":
            os.killpg(0, signum)
        else:
            os.kill(os.getpid(), signum)

checkpointing.save_checkpoint = save_then_signal
train.cli()
"""


def start_and_signal(
    args: list[str], at_step: int, signum: int, target: str = "process"
) -> subprocess.CompletedProcess:
    """Train with ``args``, send ``signum`` right after last.pt reaches ``at_step`` (to the
    training process, or with ``target`` group to its new process group); the exit."""
    command = [sys.executable, "-c", SIGNAL_AT_STEP, str(at_step), str(signum), target, *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, start_new_session=True
    )


def resume_and_compare(run_dir: Path, straight_run: Path) -> None:
    """Resume ``run_dir`` to the end; its final weights must equal the uninterrupted run's."""
    cache = f"data.cache_dir={run_dir.parent / 'cache'}"
    run_cli("mri-recon-train", f"hydra.run.dir={run_dir}", "trainer.resume=true", cache)
    expected = torch.load(straight_run / "checkpoints" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    for name, tensor in resumed.items():
        assert torch.equal(tensor, expected[name]), name


@pytest.fixture(scope="module")
def straight_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference run, trained in this process."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    args = [arg for arg in train_args(tiny_root, run_dir) if not arg.startswith("hydra.")]
    train_in_process(run_dir, *args)
    return run_dir


@pytest.mark.parametrize("at_step", [2, 7, 12])  # epoch 1, mid-epoch 2, mid-epoch 3 (5 steps each)
def test_sigkill_then_resume_matches_uninterrupted(
    tiny_root: Path, tmp_path: Path, straight_run: Path, at_step: int
) -> None:
    run_dir = tmp_path / "run"
    killed = start_and_signal(train_args(tiny_root, run_dir), at_step, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint_step(run_dir) >= at_step  # at most the work since that checkpoint is lost
    assert not (run_dir / "metrics.json").exists()
    resume_and_compare(run_dir, straight_run)
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(
        (straight_run / "metrics.json").read_text()
    )


def test_sigterm_checkpoints_and_exits_with_resume_hint(
    tiny_root: Path, tmp_path: Path, straight_run: Path
) -> None:
    run_dir = tmp_path / "run"
    stopped = start_and_signal(train_args(tiny_root, run_dir), 3, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM
    assert "trainer.resume=true" in stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stderr
    resume_and_compare(run_dir, straight_run)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_to_the_whole_job_with_loader_workers_stops_cleanly(
    tiny_root: Path, tmp_path: Path, straight_run: Path, signum: int
) -> None:
    """Slurm signals every process of a job step, DataLoader workers too: the workers leave the
    stop to the training process, which checkpoints and exits; the resumed run (two workers)
    ends like the uninterrupted one (none: masks do not depend on the workers)."""
    run_dir = tmp_path / "run"
    args = train_args(tiny_root, run_dir, "data.num_workers=2")
    stopped = start_and_signal(args, 3, signum, target="group")
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    assert stopped.returncode == 128 + signum
    assert "trainer.resume=true" in stopped.stdout + stopped.stderr
    resume_and_compare(run_dir, straight_run)


def test_nan_losses_are_skipped_then_training_stops(
    tiny_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    settings = ["optimizer.lr=1e30", "trainer.max_bad_steps=3", "trainer.gradient_clip_val=null"]
    args = [a for a in train_args(tiny_root, run_dir, *settings) if "hydra.run.dir" not in a]
    with pytest.raises(TrainingDiverged, match="training diverged: 3 consecutive steps") as error:
        train_in_process(run_dir, *args)
    assert "\n" not in str(error.value)  # printed as one line by the command line
    assert "skipped step" in caplog.text
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_corrupt_checkpoint_is_a_clear_error_for_resume_and_eval(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x80\x02 not a checkpoint")
    resume = run_cli(  # the command line prints a UserError as one line, exit status 2
        "mri-recon-train", f"hydra.run.dir={tmp_path / 'run'}", "trainer.resume=true", check=False
    )
    assert resume.returncode == 2
    assert "unreadable or corrupt" in resume.stderr and resume.stderr.strip().count("\n") == 0
    with pytest.raises(UserError, match="unreadable or corrupt") as error:
        evaluate(compose_config("eval", [f"checkpoint={checkpoint}"]), tmp_path / "eval")
    assert "\n" not in str(error.value)


def test_checkpoint_from_another_model_config_is_rejected(
    trained_run: Path, tmp_path: Path
) -> None:
    state = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=False)
    state["config"]["model"]["chans"] = 8
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(UserError, match="do not fit its model config"):
        evaluate(compose_config("eval", [f"checkpoint={tmp_path / 'other.pt'}"]), tmp_path)


def test_failed_or_interrupted_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "config": {}}, path)

    def disk_full(obj: object, file: object) -> None:
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="could not write checkpoint .*No space left"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "config": {}}, path)

    def killed(obj: object, file: object) -> None:
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_interrupted_reconstruction_write_leaves_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "reconstructions" / "unet" / "4" / "file.h5"
    write_volume(path, np.ones((2, 4, 4), dtype=np.float32))

    def killed(self: h5py.Group, name: str, data: np.ndarray) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        write_volume(path, np.zeros((2, 4, 4), dtype=np.float32))
    monkeypatch.undo()
    with h5py.File(path) as file:
        assert np.all(file["reconstruction"][()] == 1)
    assert [p.name for p in path.parent.iterdir()] == ["file.h5"]
    write_volume(path, np.zeros((2, 4, 4), dtype=np.float32))  # the re-run replaces it whole
    with h5py.File(path) as file:
        assert np.all(file["reconstruction"][()] == 0)


def test_atomic_write_keeps_the_previous_file_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half writ")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left
    with atomic_path(target) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "new"
