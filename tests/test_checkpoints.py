"""Checkpoints are untrusted files: nothing in them runs; shared weights files; old checkpoints."""

import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mri_recon.checkpoints import (
    build_model,
    load_checkpoint,
    read_model_file,
    write_weights_file,
)
from mri_recon.config import PROJECT_DIR
from mri_recon.errors import UserError
from mri_recon.evaluation.run import evaluate

from .conftest import TINY_TRAIN, compose_config, run_cli, train_in_process


class MakesMarker:
    """Unpickling this would create ``path`` (what a hostile checkpoint could do instead)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def hostile_checkpoint(trained_run: Path, folder: Path) -> tuple[Path, Path]:
    """A real checkpoint with one entry that would run a command when unpickled."""
    marker = folder / "marker"
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    state["progress"]["epoch"] = MakesMarker(marker)
    path = folder / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path, marker


def test_hostile_checkpoint_is_refused_by_eval_and_resume(
    trained_run: Path, tiny_root: Path, tmp_path: Path
) -> None:
    path, marker = hostile_checkpoint(trained_run, tmp_path)
    evaluation = run_cli(
        "mri-recon-eval",
        f"checkpoint={path}",
        f"data.root={tiny_root}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        check=False,
    )
    assert evaluation.returncode == 2 and evaluation.stderr.strip().count("\n") == 0
    assert "posix.system" in evaluation.stderr and "nothing in it was run" in evaluation.stderr
    with pytest.raises(UserError, match="needs posix.system to load"):
        train_in_process(path.parent.parent, "trainer.resume=true", *TINY_TRAIN)
    assert not marker.exists()
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_config_naming_foreign_code_is_refused_before_it_runs(
    trained_run: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    state = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    model = state["config"]["model"]
    state["config"]["model"] = {"_target_": "os.system", "command": f"touch {marker}"}
    torch.save(state, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="names 'os.system'.*refused"):
        evaluate(compose_config("eval", [f"checkpoint={tmp_path / 'foreign.pt'}"]), tmp_path)
    state["config"]["model"] = model
    state["config"]["optimizer"]["_target_"] = "subprocess.call"
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    with pytest.raises(UserError, match="names 'subprocess.call'"):
        train_in_process(path.parent.parent, "trainer.resume=true", *TINY_TRAIN)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.update(model={}), "holds no model weights"),
        (lambda state: state.update(config={}), "no training config with a model"),
        (lambda state: state.update(config={"model": {"x": 1}}), "no training config"),
        (lambda state: state.update(config=[1, 2]), "no training config"),
        (lambda state: state.update(model={"conv.weight": torch.ones(3)}), "do not fit"),
        (  # a setting of another version of mri-recon
            lambda state: state["config"]["model"].update(share_cascades=False),
            "model config cannot be built here .*share_cascades",
        ),
    ],
)
def test_checkpoint_that_is_not_what_it_claims_is_one_line(
    trained_run: Path, tmp_path: Path, change, message: str
) -> None:
    state = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(UserError, match=message):
        evaluate(compose_config("eval", [f"checkpoint={tmp_path / 'odd.pt'}"]), tmp_path)


def one_epoch_run(tiny_root: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A one-epoch run on the tiny data: its last.pt, and the overrides that resume it."""
    run_dir = tmp_path / "run"
    args = [f"data.root={tiny_root}", f"data.cache_dir={tmp_path / 'cache'}", *TINY_TRAIN]
    train_in_process(run_dir, *args, "trainer.max_epochs=1")
    return run_dir / "checkpoints" / "last.pt", args


def test_resuming_a_model_setting_this_version_does_not_know_is_one_line(
    tiny_root: Path, tmp_path: Path
) -> None:
    path, args = one_epoch_run(tiny_root, tmp_path)
    state = torch.load(path, weights_only=True)
    state["config"]["model"]["share_cascades"] = False
    torch.save(state, path)
    with pytest.raises(UserError, match="model: the model config cannot be built here") as error:
        train_in_process(path.parents[1], *args, "trainer.resume=true", "trainer.max_epochs=2")
    assert "\n" not in str(error.value) and "share_cascades" in str(error.value)


def test_new_checkpoints_hold_only_plain_types(trained_run: Path) -> None:
    for name in ("last.pt", "best.pt"):
        path = trained_run / "checkpoints" / name
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        torch.load(path, weights_only=True)  # no allowlist needed


def test_checkpoint_of_an_earlier_version_still_loads_and_resumes(
    tiny_root: Path, tmp_path: Path
) -> None:
    path, args = one_epoch_run(tiny_root, tmp_path)
    # Earlier versions stored numpy's RNG state as numpy's own tuple (a pickled ndarray).
    state = torch.load(path, weights_only=True)
    kind, keys, position, has_gauss, cached = state["rng"]["numpy"]
    state["rng"]["numpy"] = (kind, keys.numpy().astype(np.uint32), position, has_gauss, cached)
    # ... and had no model.residual: such a run resumes as the plain U-Net it was trained as,
    # not with today's default.
    assert state["config"]["model"]["residual"] is True  # today's default
    del state["config"]["model"]["residual"]
    torch.save(state, path)
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert isinstance(load_checkpoint(path)["rng"]["numpy"][1], np.ndarray)
    result = train_in_process(path.parents[1], *args, "trainer.resume=true", "trainer.max_epochs=2")
    resumed = load_checkpoint(path)
    assert result.metrics and resumed["progress"]["epoch"] == 2
    assert "residual" not in resumed["config"]["model"]
    assert build_model(OmegaConf.create(resumed["config"]["model"]), "test").residual is False


def test_resume_names_settings_this_version_does_not_have(
    tiny_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, args = one_epoch_run(tiny_root, tmp_path)
    state = torch.load(path, weights_only=True)
    state["config"]["data"]["prefetch_slices"] = 4  # a setting of another version
    torch.save(state, path)
    caplog.set_level(logging.WARNING, logger="mri_recon")
    result = train_in_process(path.parents[1], *args, "trainer.resume=true", "trainer.max_epochs=2")
    assert result.metrics and load_checkpoint(path)["progress"]["epoch"] == 2
    warnings = [r.getMessage() for r in caplog.records if "not known" in r.getMessage()]
    assert len(warnings) == 1 and "data.prefetch_slices" in warnings[0]


def test_shared_weights_file_evaluates_like_its_checkpoint(
    trained_run: Path, tmp_path: Path
) -> None:
    checkpoint = trained_run / "checkpoints" / "best.pt"
    shared = tmp_path / "unet.safetensors"
    run_cli(
        "mri-recon-share",
        f"checkpoint={checkpoint}",
        f"out={shared}",
        f"hydra.run.dir={tmp_path / 'share'}",
    )
    assert read_model_file(shared)["config"] == load_checkpoint(checkpoint)["config"]
    results = {}
    for name, path in (("pt", checkpoint), ("safetensors", shared)):
        cfg = compose_config("eval", [f"checkpoint={path}", "method=[unet]"])
        results[name] = evaluate(cfg, tmp_path / name)
    for acceleration, by_method in results["pt"].items():
        for metric in ("NMSE", "PSNR", "SSIM"):
            assert by_method["unet"][metric] == results["safetensors"][acceleration]["unet"][metric]


def test_weights_file_errors_are_one_line(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="ending in .safetensors"):
        write_weights_file(trained_run / "checkpoints" / "best.pt", tmp_path / "unet.pt")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="unreadable or corrupt"):
        read_model_file(damaged)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not written by mri-recon-share"):
        read_model_file(tmp_path / "other.safetensors")


def test_tensorboard_serves_localhost_unless_asked() -> None:
    def command(*args: str) -> str:
        return subprocess.run(
            ["make", "-n", "-W", ".venv/.installed", "tensorboard", *args],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert "--host localhost" in command() and "bind_all" not in command()
    assert "--host 0.0.0.0" in command("TB_HOST=0.0.0.0")
