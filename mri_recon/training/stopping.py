"""Stop requests: SIGTERM, SIGINT (Ctrl-C) and the USR signals Slurm and Submitit send before a
preemption or a time limit end training cleanly at the next step, with a checkpoint."""

import logging
import signal
from types import FrameType

import torch

from mri_recon import distributed

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class StopRequest:
    """Catches the stop signals while training (a context manager) and says when to stop.

    The first signal asks training to stop after the current step; a second Ctrl-C stops at
    once. Under torchrun the ranks agree (one all_reduce) every ``every_n_steps`` steps and at
    each epoch's end, so they all stop at the same step; a single process checks every step.
    """

    def __init__(self, every_n_steps: int, device: torch.device) -> None:
        self.every_n_steps = every_n_steps
        self.device = device
        self.signum: int | None = None  # the first signal this process received
        self.stopped: signal.Signals | None = None  # set once the ranks agreed to stop
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        self.previous = {signum: signal.signal(signum, self.handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: remember the request (the second one interrupts at once)."""
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step", signal.Signals(signum).name)

    def ranks_compare(self, step: int | None) -> bool:
        """Whether the ranks exchange a flag at ``step``: every ``every_n_steps`` steps under
        torchrun, every step in a single process, always at an epoch's end (None)."""
        return distributed.world_size() == 1 or step is None or step % self.every_n_steps == 0

    def agreed(self, step: int | None = None) -> bool:
        """Whether any rank was asked to stop (then ``stopped`` names the signal).

        ``step``: under torchrun the ranks only compare every ``every_n_steps`` steps (False in
        between); None: compare now (at an epoch's end).
        """
        if not self.ranks_compare(step):
            return False
        if not distributed.any_rank(self.signum is not None, self.device):
            return False
        self.stopped = signal.Signals(self.signum if self.signum is not None else signal.SIGTERM)
        return True
