"""One writer per run directory: a second process stops with one line naming the holder and
touches nothing; the lock of a dead process is taken over; nested holds in one process are one."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mri_recon.checkpoints import load_checkpoint
from mri_recon.errors import UserError
from mri_recon.training.run_lock import LOCK_NAME, command_line_run_dir, run_lock

from .conftest import TINY_TRAIN, run_cli

# A process that holds a run directory until it is killed.
HOLD = (
    "import sys, time\nfrom pathlib import Path\n"
    "from mri_recon.training.run_lock import run_lock\n"
    "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n"
)


def start_holder(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def stop_and_wait(process: subprocess.Popen) -> None:
    """SIGSTOP ``process`` and wait until the kernel has stopped it (state T in /proc): the
    signal is delivered asynchronously, and a write in flight when it was sent changed a
    snapshot taken at once (an event file, once in a fresh-clone run)."""
    process.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T" and time.monotonic() < deadline:
        time.sleep(0.01)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder``: (size, modification time in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_held_directory_is_refused_until_its_holder_dies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mri_recon")
    holder = start_holder(tmp_path / "run")
    try:
        with pytest.raises(UserError) as error, run_lock(tmp_path / "run"):
            pass
        message = str(error.value)
        assert f"process {holder.pid} on host {socket.gethostname()}" in message
        assert "\n" not in message and "hydra.run.dir" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(tmp_path / "run"):  # the dead holder's lock is taken over
        assert str(os.getpid()) in (tmp_path / "run" / LOCK_NAME).read_text()
    assert f"from process {holder.pid}" in caplog.text and "without releasing it" in caplog.text
    with run_lock(tmp_path / "run"):  # released cleanly: nothing to take over
        pass
    assert caplog.text.count("took over") == 1


def test_nested_holds_in_one_process_are_one(tmp_path: Path) -> None:
    with run_lock(tmp_path), run_lock(tmp_path):
        pass
    with run_lock(tmp_path):  # released when the outer hold ended
        pass


@pytest.mark.parametrize(
    "args, expected",
    [
        (["hydra.run.dir=runs/a", "hydra.run.dir=/b"], Path("/b")),
        (["optimizer.lr=1e-3"], None),
        (["-m", "hydra.run.dir=/b"], None),
        (["--cfg", "job", "hydra.run.dir=/b"], None),
    ],
)
def test_the_command_lines_run_directory(args: list[str], expected: Path | None) -> None:
    assert command_line_run_dir(args) == expected


def test_a_second_trainer_on_a_live_run_stops_and_touches_nothing(
    tiny_root: Path, tmp_path: Path
) -> None:
    """mri-recon-train started twice on one directory (a command run twice, a requeued job whose
    predecessor still runs): the second ends with one line naming the first; the first runs on
    and its directory is as it left it; once the first ends, the directory can be resumed."""
    run_dir = tmp_path / "run"
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", *TINY_TRAIN]
    first = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mri-recon-train"),
            *args,
            f"hydra.run.dir={run_dir}",
            "trainer.max_epochs=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_and_wait(first)  # holds still while the directory is compared
        before = snapshot(run_dir)
        second = run_cli("mri-recon-train", *args, f"hydra.run.dir={run_dir}", check=False)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f"is in use by process {first.pid} on host" in second.stderr
        assert snapshot(run_dir) == before
    finally:
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)  # stops after its step, with a checkpoint
        first.wait(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    epochs = load_checkpoint(run_dir / "checkpoints" / "last.pt")["progress"]["epoch"] + 1
    run_cli(
        "mri-recon-train",
        f"hydra.run.dir={run_dir}",
        "trainer.resume=true",
        f"trainer.max_epochs={epochs}",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    assert json.loads((run_dir / "metrics.json").read_text())["epoch"] == epochs
