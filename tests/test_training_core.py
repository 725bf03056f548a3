"""The training core in-process: the shared step, stop requests, validation, resume."""

import os
import signal
from pathlib import Path

import psutil
import pytest
import torch
from fastmri.models import Unet as FastmriUnet

from mri_recon.checkpoints import load_checkpoint
from mri_recon.data.loaders import TrainingData, worker_count
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.reconstruct import predict
from mri_recon.runtime import Runtime
from mri_recon.schedulers import Horizon, constant
from mri_recon.training import loop
from mri_recon.training.settings import check_config
from mri_recon.training.state import TrainState
from mri_recon.training.step import train_step
from mri_recon.training.stopping import StopRequest
from mri_recon.training.validation import panel_slices, validate

from .conftest import compose_config, train_in_process


def tiny_state(tiny_root: Path, tmp_path: Path, *overrides: str) -> tuple[TrainState, TrainingData]:
    cfg = compose_config(
        "train",
        ["debug=tiny", f"data.root={tiny_root}", f"data.cache_dir={tmp_path}", *overrides],
    )
    data = TrainingData(cfg, torch.device("cpu"))
    runtime = Runtime.create("cpu", "32")
    return TrainState.create(cfg, runtime, len(data.train_loader)), data


def test_debug_tiny_holds_the_tiny_sizes() -> None:
    cfg = compose_config("train", ["debug=tiny"])
    assert (cfg.model.chans, cfg.model.num_pool_layers) == (4, 2)
    assert (cfg.data.batch_size, cfg.data.num_workers, cfg.trainer.max_epochs) == (2, 0, 2)


def test_step_updates_and_a_non_finite_step_changes_nothing(
    tiny_root: Path, tmp_path: Path
) -> None:
    state, data = tiny_state(tiny_root, tmp_path)
    runtime = Runtime.create("cpu", "32")
    batch = next(iter(data.train_loader))
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    result = train_step(state, batch, runtime, clip=1.0)
    assert result.applied and result.loss > 0
    assert state.scheduler.last_epoch == 1
    changed = state.model.state_dict()
    assert any(not torch.equal(before[k], changed[k]) for k in before)

    after_one = {k: v.clone() for k, v in changed.items()}
    moments = {k: v.clone() for k, v in state.optimizer.state_dict()["state"][0].items()}
    bad = train_step(state, batch._replace(image=batch.image * float("nan")), runtime, clip=1.0)
    assert not bad.applied
    assert state.scheduler.last_epoch == 1
    for k, v in state.model.state_dict().items():
        assert torch.equal(v, after_one[k]), k
    for k, v in state.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, moments[k]), k


def test_stop_request_catches_signals_and_restores_handlers() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest(every_n_steps=10, device=torch.device("cpu")) as stop:
        assert not stop.agreed(1) and stop.stopped is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed(3) and stop.stopped == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_validation_is_one_pass_and_its_panels_are_its_outputs(
    tiny_root: Path, tmp_path: Path
) -> None:
    state, data = tiny_state(tiny_root, tmp_path)
    runtime = Runtime.create("cpu", "32")
    keys = panel_slices(data.val_set, 3)
    calls = []
    state.model.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    result = validate(state, data.val_loader, runtime, keys)
    assert sum(calls) == len(data.val_set)  # every slice through the model exactly once
    assert [(p.fname, p.slice_num) for p in result.panels] == keys
    assert set(result.per_volume) == {path.name for path, _ in data.val_set.slices}
    assert -1 <= result.metrics["SSIM"]["mean"] <= 1
    index = next(i for i, item in enumerate(data.val_set.slices) if item[0].name == keys[1][0])
    sample = data.val_set[index + keys[1][1]]
    alone = predict(state.model, sample.image[None], runtime)[0, 0] * sample.std + sample.mean
    assert torch.allclose(torch.from_numpy(result.panels[1].output), alone, atol=1e-4)


@pytest.mark.parametrize("transform_on", ["workers", "device"])
def test_stop_mid_epoch_then_resume_equals_a_straight_run(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transform_on: str
) -> None:
    common = [
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "debug=tiny",
        f"data.transform_on={transform_on}",
    ]
    straight = train_in_process(tmp_path / "straight", *common, "trainer.max_epochs=2")

    def stop_at_step_7(state, *args, **kwargs):
        if state.global_step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_step(state, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", stop_at_step_7)
    stopped = train_in_process(tmp_path / "split", *common, "trainer.max_epochs=2")
    assert stopped.stopped_by == signal.SIGTERM
    state = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    assert state["progress"]["global_step"] == 7 and state["progress"]["batches_done"] == 2
    monkeypatch.undo()

    resume = ["trainer.resume=true", f"data.cache_dir={tmp_path / 'cache'}"]
    resumed = train_in_process(tmp_path / "split", *resume)
    assert resumed.stopped_by is None and resumed.metrics == straight.metrics
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=False)
    assert a["progress"] == b["progress"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_device_side_transform_gives_the_workers_batches(tiny_root: Path, tmp_path: Path) -> None:
    """data.transform_on=device: the loaders yield the batches the workers would have made."""
    batches = {}
    for where in ("workers", "device"):
        _, data = tiny_state(
            tiny_root, tmp_path, f"data.transform_on={where}", "data.challenge=multicoil"
        )
        data.start_epoch(0)
        batches[where] = [next(iter(data.train_loader)), next(iter(data.val_loader))]
    for workers, device in zip(batches["workers"], batches["device"], strict=True):
        assert workers.fname == device.fname
        for field in ("image", "target", "mean", "std"):
            torch.testing.assert_close(
                getattr(device, field), getattr(workers, field), rtol=1e-4, atol=1e-4
            )


def test_a_model_without_takes_is_an_image_model_in_the_step() -> None:
    """fastmri.models.Unet has no ``takes``: the benchmarks train it through ``train_step``."""
    torch.manual_seed(0)
    model = FastmriUnet(1, 1, 4, 2)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    state = TrainState(model, optimizer, constant(optimizer, Horizon(0), 0), config={})
    images = torch.randn(2, 1, 16, 16)
    before = [parameter.clone() for parameter in model.parameters()]
    result = train_step(state, Sample(images, images), Runtime.create("cpu", "32"), clip=None)
    assert result.applied and result.loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(
    "cores, machine, ranks, expected",
    [(2, 2, 1, 2), (16, 16, 1, 8), (16, 16, 2, 7), (64, 64, 8, 7), (4, 64, 8, 3)],
)
def test_auto_workers_are_sized_to_the_machine(
    monkeypatch: pytest.MonkeyPatch, cores: int, machine: int, ranks: int, expected: int
) -> None:
    """All but one of the process's cores, 2 to 8: a process bound to its own cores (a Slurm
    task) takes them; one that sees the whole machine shares it with its node's ranks."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "cpu_count", lambda: machine)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    assert worker_count("auto") == expected
    assert worker_count(3) == 3


def test_auto_workers_are_saved_as_a_number(tiny_root: Path, tmp_path: Path) -> None:
    """So that a run resumed elsewhere draws its masks from as many workers as before."""
    args = ["debug=tiny", f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}"]
    train_in_process(tmp_path / "run", *args, "data.num_workers=auto", "trainer.max_epochs=1")
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["config"]
    assert saved["data"]["num_workers"] == worker_count("auto")


@pytest.mark.parametrize("value", ["many", "-1", "1.5"])
def test_a_worker_count_that_cannot_work_is_one_line(value: str) -> None:
    cfg = compose_config("train", [f"data.num_workers={value}"])
    with pytest.raises(UserError, match="data.num_workers: expected auto or an integer >= 0"):
        check_config(cfg)


def epoch_images(data: TrainingData, epochs: range) -> list[torch.Tensor]:
    """Every training batch's images, epoch after epoch."""
    images = []
    for epoch in epochs:
        data.start_epoch(epoch)
        images += [batch.image for batch in data.train_loader]
    return images


def test_training_masks_do_not_depend_on_the_workers_or_where_a_run_resumed(
    tiny_root: Path, tmp_path: Path
) -> None:
    """Each slice's mask comes from (seed, epoch, index): two persistent workers give the
    batches the main process gives, and a loader started at epoch 2 (a resumed run) gives what
    one that ran epochs 0 and 1 gives next."""
    _, main_process = tiny_state(tiny_root, tmp_path)
    _, workers = tiny_state(tiny_root, tmp_path, "data.num_workers=2")
    _, resumed = tiny_state(tiny_root, tmp_path, "data.num_workers=2")
    expected = epoch_images(main_process, range(3))
    got = epoch_images(workers, range(3))
    assert len(got) == len(expected) == 3 * len(main_process.train_loader)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    per_epoch = len(main_process.train_loader)
    for a, b in zip(epoch_images(resumed, range(2, 3)), expected[2 * per_epoch :], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(expected[0], expected[per_epoch])  # new masks (and order) each epoch


def test_loader_workers_are_started_once_per_run(tiny_root: Path, tmp_path: Path) -> None:
    _, data = tiny_state(tiny_root, tmp_path, "data.num_workers=2")
    epoch_images(data, range(1))
    started = data.train_loader._iterator._workers
    epoch_images(data, range(1, 3))
    assert data.train_loader._iterator._workers is started
    assert all(worker.is_alive() for worker in started)


def test_a_finished_run_leaves_no_loader_workers(tiny_root: Path, tmp_path: Path) -> None:
    """Workers persist across epochs, not past the run: a sweep's jobs, run one after another in
    one process by Hydra's basic launcher, would otherwise pile them up."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    args = ["debug=tiny", f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}"]
    train_in_process(tmp_path / "run", *args, "data.num_workers=2", "trainer.max_epochs=2")
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before
