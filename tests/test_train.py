"""Training: run directory, TensorBoard, checkpoints, exact resume (CLI and in-process)."""

import json
import logging
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mri_recon.errors import UserError

from .conftest import TINY_TRAIN, run_cli, train_in_process

SCALARS_PER_STEP = ("train/loss", "train/lr", "train/slices_per_sec")
SCALARS_PER_EPOCH = ("val/loss", "val/SSIM", "val/PSNR", "val/NMSE")


def test_run_directory_holds_config_events_checkpoints_metrics(trained_run: Path) -> None:
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert list(trained_run.glob("events.out.tfevents.*"))
    for name in ("last.pt", "best.pt"):
        state = torch.load(trained_run / "checkpoints" / name, weights_only=False)
        assert {"model", "optimizer", "scheduler", "progress", "rng", "config"} <= set(state)
        assert state["config"]["model"]["norm"] == "group"
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["epoch"] == 2
    assert {"loss", "SSIM", "PSNR", "NMSE"} <= set(metrics["val"])
    assert 0 < metrics["val"]["SSIM"]["mean"] <= 1


def test_tensorboard_events_hold_scalars_and_image_panels(trained_run: Path) -> None:
    events = EventAccumulator(str(trained_run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in (*SCALARS_PER_STEP, *SCALARS_PER_EPOCH):
        assert tag in tags["scalars"], tag
    # 9 slices / batch 2 = 5 steps an epoch; per-epoch scalars sit at the epoch's last step.
    assert len(events.Scalars("train/loss")) == 10
    assert [e.step for e in events.Scalars("val/SSIM")] == [5, 10]
    assert [e.step for e in events.Scalars("time/epoch_seconds")] == [5, 10]
    panels = [tag for tag in tags["images"] if tag.startswith("val_images/")]
    assert len(panels) == 2
    image = events.Images(panels[0])[-1]
    assert image.width == 4 * image.height  # target | zero-filled | U-Net | |error|


def test_resumed_run_ends_with_identical_weights(
    tiny_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    common = [
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *TINY_TRAIN,
        "trainer.max_epochs=3",
        "data.num_workers=2",
        "model.drop_prob=0.1",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_in_process(straight, *common)
    caplog.set_level(logging.INFO)
    train_in_process(split, *common, "trainer.stop_after_epoch=1")
    assert "trainer.resume=true" in caplog.text
    assert not (split / "metrics.json").exists()
    train_in_process(split, "trainer.resume=true", f"data.cache_dir={tmp_path / 'cache'}")
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=False)
    assert a["progress"] == b["progress"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert json.loads((straight / "metrics.json").read_text()) == json.loads(
        (split / "metrics.json").read_text()
    )
    # TensorBoard: the resumed run's curves continue the first part's, nothing lost or doubled.
    for tag in ("val/SSIM", "train/loss"):
        assert scalar_curve(split, tag) == scalar_curve(straight, tag), tag


def scalar_curve(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, round(event.value, 6)) for event in events.Scalars(tag)]


def test_resume_without_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        train_in_process(tmp_path, "trainer.resume=true")
    assert "\n" not in str(error.value)
    assert "trainer.resume" in str(error.value) and "hydra.run.dir" in str(error.value)


def test_bad_data_root_and_bad_values_are_one_clear_line(tmp_path: Path) -> None:
    # The checks raise a one-line UserError in-process; the command prints it as one line
    # (exit 2: test_bad_input.test_bad_value_is_one_line_from_the_command).
    cases = {
        f"data.root={tmp_path / 'missing'}": "does not exist",
        "optimizer.lr=-1": "optimizer.lr",
        "mask.center_fractions=[1.5,0.04]": "center_fractions",
    }
    for override, message in cases.items():
        with pytest.raises(UserError, match=message) as error:
            train_in_process(tmp_path / "run", override)
        assert "\n" not in str(error.value)


def test_multirun_sweep_makes_one_run_per_value(tiny_root: Path, tmp_path: Path) -> None:
    run_cli(
        "mri-recon-train",
        "-m",
        "optimizer.lr=1e-3,3e-4",
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "trainer.max_epochs=1",
        *TINY_TRAIN,
    )
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert runs == ["0", "1"]
    lrs = [
        torch.load(tmp_path / "sweep" / run / "checkpoints" / "last.pt", weights_only=False)[
            "config"
        ]["optimizer"]["lr"]
        for run in runs
    ]
    assert lrs == [1e-3, 3e-4]
