"""One writer per run directory: a second training process on a directory that a live process
trains in stops with one line naming the holder, and nothing of the first is touched.

    with run_lock(run_dir):      # UserError if another live process holds run_dir
        ...

The lock is ``flock`` on ``<run dir>/train.lock``, a file that names its holder (process id and
host) for that line. The kernel (or the NFS server of a cluster's shared file system) drops the
lock when its holder ends, however it ends, so the lock of a dead process (a killed job, a
requeued Slurm job whose predecessor is gone) is taken over with no clean-up. Under torchrun
rank 0 holds it for the whole job; the other ranks write nothing to the directory.
"""

import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mri_recon import distributed
from mri_recon.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"
# The run directories this process holds: lock file -> (descriptor, how many holds are open).
HELD: dict[Path, tuple[int, int]] = {}


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process while the block runs (nested holds are one hold)."""
    if not distributed.is_main():
        yield
        return
    path = (run_dir / LOCK_NAME).resolve()
    descriptor, holds = HELD.get(path) or (acquire(path), 0)
    HELD[path] = (descriptor, holds + 1)
    try:
        yield
    finally:
        descriptor, holds = HELD.pop(path)
        if holds > 1:
            HELD[path] = (descriptor, holds - 1)
        else:  # a lock file that still names its holder was left by a process that died
            os.ftruncate(descriptor, 0)
            os.close(descriptor)  # releases the lock


def command_line_run_dir(args: list[str]) -> Path | None:
    """The run directory a single run's command line names (``hydra.run.dir=DIR``, as Hydra
    reads it: relative to the working directory), so that it is held before Hydra writes its
    config and log there; None for sweeps (``-m``), Hydra's own flags or no such override."""
    if any(arg.startswith("-") for arg in args):
        return None
    named = [arg.split("=", 1)[1] for arg in args if arg.startswith("hydra.run.dir=")]
    return Path(named[-1]) if named else None


def acquire(path: Path) -> int:
    """Lock ``path`` (created if missing) and write this process into it; its descriptor.

    UserError naming the holder if a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_holder(descriptor) or "another process"
        os.close(descriptor)
        raise UserError(
            f"{path.parent} is in use by {holder}, which is training there: wait for it to end, "
            "stop it, or pass another hydra.run.dir (nothing in that directory was changed)"
        ) from None
    previous = read_holder(descriptor)
    if previous:
        log.info("took over %s from %s, which ended without releasing it", path, previous)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"process {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    return descriptor


def read_holder(descriptor: int) -> str:
    """Who the lock file names as its holder ('' for a new file)."""
    return os.pread(descriptor, 256, 0).decode(errors="replace").strip()
