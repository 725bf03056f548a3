"""The ablation sweeps (configs/experiment/) and scripts/compare_runs.py, through the real CLI."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import hydra
import matplotlib.image
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from mri_recon.config import CONFIG_DIR
from mri_recon.models.unet import NORMS

from .conftest import TINY_TRAIN, compose_config, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from compare_runs import last_epoch_losses  # noqa: E402

COMPARE = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"
# The experiments' sizes are for the demo data; these make each run take about a second.
MINIATURE = [*TINY_TRAIN, "model.chans=4", "trainer.max_epochs=2", "trainer.num_val_images=1"]


def sweep(tmp_path: Path, tiny_root: Path, *overrides: str) -> Path:
    """Run ``mri-recon-train -m`` with ``overrides`` on the tiny data; return the sweep folder."""
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "mri-recon-train",
        "-m",
        *MINIATURE,
        f"data.root={tiny_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,  # last, so they win over MINIATURE's
    )
    return sweep_dir


def compare(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(COMPARE), *map(str, args)], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"compare_runs failed:\n{result.stderr[-3000:]}")
    return result


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The comparison table's rows by configuration: cells after the first."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_optimizer_sweep_and_comparison(tiny_root: Path, tmp_path: Path) -> None:
    sweep_dir = sweep(
        tmp_path,
        tiny_root,
        "experiment=optimizer_ablation",
        "optimizer=sgd,adam",
        "lr_scale=3",
        "model.norm=instance",
        "seed=0",
    )
    runs = {name: final_metrics(sweep_dir / name) for name in ("0", "1")}
    # Each optimizer at lr_scale times its own base lr (configs/experiment/optimizer_ablation.yaml).
    assert runs["0"]["hparams"]["optimizer"] == "SGD"
    assert runs["0"]["hparams"]["lr"] == pytest.approx(3 * 3e-2)
    assert runs["1"]["hparams"]["lr"] == pytest.approx(3 * 1e-3)
    assert runs["1"]["hparams"]["norm"] == "instance"

    out = tmp_path / "comparison"
    result = compare(sweep_dir, "--out", out)
    rows = table_rows(out.with_suffix(".md").read_text())
    assert set(rows) == {"optimizer=sgd", "optimizer=adam"}  # shared overrides are left out
    assert rows == table_rows(result.stdout)
    for label, name in (("optimizer=sgd", "0"), ("optimizer=adam", "1")):
        (
            lr,
            seeds,
            ssim,
            psnr,
            nmse,
            first_ssim,
            train_loss,
            val_loss,
            best_epoch,
            steps,
            seconds,
            notes,
        ) = rows[label]
        val = runs[name]["val"]
        assert float(lr) == pytest.approx(runs[name]["hparams"]["lr"])
        assert seeds == "0"
        assert float(ssim) == pytest.approx(val["SSIM"]["mean"], abs=1e-4)
        assert float(psnr) == pytest.approx(val["PSNR"]["mean"], abs=1e-2)
        assert float(nmse) == pytest.approx(val["NMSE"]["mean"], abs=1e-4)
        assert best_epoch == str(runs[name]["best"]["epoch"])
        assert 0 < float(first_ssim) <= 1
        assert float(train_loss) > 0
        assert float(val_loss) == pytest.approx(val["loss"], abs=1e-4)
        assert float(seconds) > 0 and notes == ""
        last = torch.load(sweep_dir / name / "checkpoints" / "last.pt", weights_only=False)
        assert int(steps) == last["progress"]["global_step"] > 0
    image = matplotlib.image.imread(out.with_suffix(".png"))
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # two panels side by side


def test_norm_sweep_groups_seeds_and_reports_their_spread(tiny_root: Path, tmp_path: Path) -> None:
    sweep_dir = sweep(
        tmp_path,
        tiny_root,
        "experiment=norm_ablation",
        "model.norm=batch",
        "data.batch_size=1,2",
        "seed=0,1",
    )
    compare(sweep_dir)
    rows = table_rows((sweep_dir / "comparison.md").read_text())
    assert set(rows) == {"data.batch_size=1", "data.batch_size=2"}
    runs = [final_metrics(run) for run in sweep_dir.iterdir() if run.is_dir()]
    ssims = [run["val"]["SSIM"]["mean"] for run in runs if run["hparams"]["batch_size"] == 1]
    cells = rows["data.batch_size=1"]
    assert cells[1] == "0, 1"
    mean, spread = cells[2].split(" (")
    assert float(mean) == pytest.approx(sum(ssims) / 2, abs=1e-4)
    assert float(spread.rstrip(")")) == pytest.approx(abs(ssims[0] - ssims[1]), abs=1e-4)

    compare(sweep_dir, "--where", "data.batch_size=2.0", "--out", tmp_path / "only2")
    only2 = table_rows((tmp_path / "only2.md").read_text())
    assert list(only2) == ["all runs"]  # one configuration: the two seeds at batch size 2
    assert only2["all runs"][1] == "0, 1"


def test_a_diverged_job_is_recorded_and_the_sweep_goes_on(tiny_root: Path, tmp_path: Path) -> None:
    sweep_dir = sweep(
        tmp_path,
        tiny_root,
        "optimizer.lr=1e30,1e-3",
        "trainer.gradient_clip_val=null",
        "trainer.max_bad_steps=2",
    )
    assert "training diverged" in final_metrics(sweep_dir / "0")["diverged"]
    assert "val" in final_metrics(sweep_dir / "1")
    (sweep_dir / "1" / "metrics.json").write_text('{"val": {"SS')  # cut short by a crash
    result = compare(sweep_dir)
    assert "1/metrics.json: unreadable" in result.stderr
    rows = table_rows(result.stdout)
    # Labels as Hydra writes the values.
    assert rows["optimizer.lr=1e+30"][-1] == "diverged (seed 0)"
    assert rows["optimizer.lr=0.001"][-1] == "incomplete (seed 0)"  # read from its events
    assert float(rows["optimizer.lr=0.001"][2]) > 0


def test_a_short_last_epoch_still_has_its_train_loss() -> None:
    """A budget's last, partial epoch may end before train/loss is logged again: the column
    takes the epoch's own mean (train/epoch_loss), not a NaN."""
    curves = {
        "train/loss": (np.array([10, 20]), np.array([0.5, 0.4])),
        "train/epoch_loss": (np.array([20, 23]), np.array([0.45, 0.3])),
        "val/loss": (np.array([20, 23]), np.array([0.6, 0.5])),
    }
    assert last_epoch_losses(curves) == {"train loss": pytest.approx(0.3), "val loss": 0.5}
    del curves["train/epoch_loss"]  # a run written before that scalar existed
    assert np.isnan(last_epoch_losses(curves)["train loss"])


def test_compare_runs_takes_plain_run_directories(trained_run: Path, tmp_path: Path) -> None:
    with SummaryWriter(str(tmp_path / "eval")) as writer:  # like an evaluation run: no scalars
        writer.add_text("eval/report", "not a training run")
    out = tmp_path / "one"
    compare(trained_run, tmp_path / "eval", "--out", out)
    rows = table_rows(out.with_suffix(".md").read_text())
    assert list(rows) == [trained_run.name]  # a lone run is named by its folder
    missing = compare(tmp_path / "nowhere", check=False)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such folder (expected a run or sweep directory)"
    ]
    empty = compare(tmp_path, "--where", "model.norm=batch", check=False)
    assert empty.stderr.strip().startswith("error: no training runs matching model.norm=batch")


def test_a_bad_lr_scale_is_one_clear_line(tiny_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "mri-recon-train",
        "experiment=optimizer_ablation",
        "lr_scale=abc",
        f"data.root={tiny_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: optimizer.lr: ValueError raised while resolving interpolation: "
        "mul: expected two numbers, got 'abc' and 0.001"
    ]


# Keyword arguments of torch's optimizers that select an implementation, not a hyperparameter
# (decoupled_weight_decay turns Adam into AdamW, which has its own config).
IMPLEMENTATION_ARGS = {"foreach", "maximize", "capturable", "differentiable", "fused"}
IMPLEMENTATION_ARGS |= {"decoupled_weight_decay"}
# The implementation switches the configs set on purpose (Adam and AdamW: the fused kernel).
CONFIGURED_SWITCHES = {"fused"}
OPTIMIZERS = sorted(path.stem for path in (Path(CONFIG_DIR) / "optimizer").glob("*.yaml"))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_configs_expose_every_hyperparameter(name: str) -> None:
    cfg = compose_config("train", [f"optimizer={name}"])
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.ones(1))])
    hyperparameters = set(inspect.signature(type(optimizer)).parameters) - {"params"}
    exposed = set(cfg.optimizer) - {"_target_", "_partial_"}
    assert exposed - CONFIGURED_SWITCHES == hyperparameters - IMPLEMENTATION_ARGS
    for key in exposed:  # every value reaches the optimizer
        value = optimizer.param_groups[0][key]
        assert (list(value) if isinstance(value, tuple) else value) == cfg.optimizer[key], key


def test_ablation_sweeps_cover_every_optimizer_and_norm() -> None:
    def swept(experiment: str, key: str) -> list[str]:
        params = OmegaConf.load(Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml")
        return str(params.hydra.sweeper.params[key]).split(",")

    assert sorted(swept("optimizer_ablation", "optimizer")) == OPTIMIZERS
    assert {"group", "instance"} <= set(swept("optimizer_ablation", "model.norm"))
    assert sorted(swept("norm_ablation", "model.norm")) == sorted(NORMS)
    assert swept("norm_ablation", "data.batch_size") == ["1", "8"]
    for experiment in ("optimizer_ablation", "norm_ablation"):
        assert len(swept(experiment, "seed")) >= 2
