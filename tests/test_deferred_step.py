"""trainer.defer_sync: the step whose loss and NaN check the host reads one step later does the
same arithmetic as the plain step, skips a NaN/Inf step on the device, and resumes exactly."""

import os
import signal
from pathlib import Path

import pytest
import torch

from mri_recon.errors import UserError
from mri_recon.runtime import Runtime
from mri_recon.training import loop
from mri_recon.training.settings import check_config
from mri_recon.training.step import gradients, queue_update, settle, train_step

from .conftest import compose_config, train_in_process
from .test_training_core import tiny_state


def copies(tensors: dict) -> dict:
    return {key: value.clone() for key, value in tensors.items()}


def test_a_deferred_step_is_the_plain_step_and_a_nan_step_changes_nothing(
    tiny_root: Path, tmp_path: Path
) -> None:
    runtime = Runtime.create("cpu", "32")
    torch.manual_seed(0)
    plain, data = tiny_state(tiny_root, tmp_path)
    torch.manual_seed(0)
    deferred, _ = tiny_state(tiny_root, tmp_path)
    batch = next(iter(data.train_loader))
    expected = train_step(plain, batch, runtime, clip=1.0)
    pending = gradients(deferred, batch, runtime, clip=1.0)
    queue_update(deferred, pending)
    assert settle(deferred, pending) == expected and expected.applied
    assert deferred.scheduler.last_epoch == plain.scheduler.last_epoch == 1
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, deferred.model.state_dict()[name]), name

    weights = copies(deferred.model.state_dict())
    moments = copies(deferred.optimizer.state_dict()["state"][0])
    bad = gradients(deferred, batch._replace(image=batch.image * float("nan")), runtime, 1.0)
    queue_update(deferred, bad)
    assert not settle(deferred, bad).applied and deferred.scheduler.last_epoch == 1
    for name, tensor in deferred.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    for name, tensor in deferred.optimizer.state_dict()["state"][0].items():
        assert torch.equal(tensor, moments[name]), name  # the step count too
    assert not hasattr(deferred.optimizer, "found_inf")


def test_a_deferred_run_stopped_mid_epoch_and_resumed_equals_a_plain_run(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while step 8's gradients are computed: step 7 is counted and checkpointed, step
    8's gradients are dropped; the resumed run ends bit-identical to an uninterrupted plain run
    (the same weights, optimizer state and counters)."""
    common = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", "debug=tiny"]
    straight = train_in_process(tmp_path / "straight", *common, "trainer.max_epochs=2")

    def stop_at_step_8(state, *args, **kwargs):
        if state.global_step == 6:  # step 7 queued, not yet counted
            os.kill(os.getpid(), signal.SIGTERM)
        return gradients(state, *args, **kwargs)

    monkeypatch.setattr(loop, "gradients", stop_at_step_8)
    deferred = [*common, "trainer.max_epochs=2", "trainer.defer_sync=true"]
    stopped = train_in_process(tmp_path / "split", *deferred)
    assert stopped.stopped_by == signal.SIGTERM
    state = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"]["global_step"] == 7 and state["progress"]["batches_done"] == 2
    monkeypatch.undo()

    resumed = train_in_process(tmp_path / "split", "trainer.resume=true", *common[1:2])
    assert resumed.stopped_by is None and resumed.metrics == straight.metrics
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    assert a["progress"] == b["progress"] and b["config"]["trainer"]["defer_sync"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert str(a["optimizer"]) == str(b["optimizer"])


def test_defer_sync_with_an_optimizer_that_cannot_skip_on_the_device_is_one_line(
    tiny_root: Path, tmp_path: Path
) -> None:
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path}", "debug=tiny"]
    with pytest.raises(
        UserError, match=r"trainer.defer_sync: expected a fused optimizer .* RMSprop"
    ):
        train_in_process(tmp_path / "run", *args, "optimizer=rmsprop", "trainer.defer_sync=true")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_defer_sync_with_dropout_is_one_line() -> None:
    cfg = compose_config("train", ["trainer.defer_sync=true", "model.drop_prob=0.1"])
    with pytest.raises(UserError, match=r"trainer.defer_sync: expected model.drop_prob=0 .* 0.1"):
        check_config(cfg)
