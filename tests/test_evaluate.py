"""Evaluation through the real CLI and in-process: metrics.json, per_volume.csv, report.md, submission files."""

import csv
import json
from pathlib import Path

import h5py
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mri_recon.errors import UserError
from mri_recon.evaluation.run import evaluate

from .conftest import compose_config, run_cli


@pytest.fixture(scope="module")
def evaluation(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    run_cli(
        "mri-recon-eval",
        f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}",
        f"hydra.run.dir={out}",
        "save_reconstructions=true",
    )
    return out


def test_metrics_json_has_the_documented_layout(evaluation: Path) -> None:
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_volumes"] == 2
    assert set(metrics["results"]) == {"4", "8"}
    for by_method in metrics["results"].values():
        assert set(by_method) == {"zero_filled", "tv", "unet"}
        for values in by_method.values():
            assert set(values) == {"NMSE", "PSNR", "SSIM", "seconds_per_slice"}
            assert set(values["SSIM"]) == {"mean", "std"}
            assert values["seconds_per_slice"] > 0
    results = metrics["results"]
    assert results["4"]["zero_filled"]["SSIM"]["mean"] > results["8"]["zero_filled"]["SSIM"]["mean"]
    for acceleration in ("4", "8"):
        tv, zero_filled = results[acceleration]["tv"], results[acceleration]["zero_filled"]
        assert tv["NMSE"]["mean"] < zero_filled["NMSE"]["mean"]


def test_per_volume_csv_and_report(evaluation: Path) -> None:
    with open(evaluation / "per_volume.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 * 3 * 2  # volumes x methods x accelerations
    assert set(rows[0]) == {"file", "acceleration", "method", "slices", "NMSE", "PSNR", "SSIM"}
    report = (evaluation / "report.md").read_text()
    assert "## 4x" in report and "## 8x" in report
    for method in ("zero_filled", "tv", "unet"):
        assert f"| {method} |" in report
    assert (evaluation / "figure.png").stat().st_size > 10_000


def test_reconstruction_files_are_fastmri_submissions(evaluation: Path, tiny_root: Path) -> None:
    files = sorted((evaluation / "reconstructions").rglob("*.h5"))
    assert len(files) == 2 * 3 * 2
    with h5py.File(evaluation / "reconstructions" / "unet" / "4" / files[0].name) as file:
        assert file["reconstruction"].shape == (3, 32, 32)


def test_evaluating_twice_gives_identical_metrics(
    trained_run: Path, evaluation: Path, tmp_path: Path
) -> None:
    checkpoint = trained_run / "checkpoints" / "best.pt"
    evaluate(compose_config("eval", [f"checkpoint={checkpoint}"]), tmp_path)  # in-process
    first = json.loads((evaluation / "metrics.json").read_text())["results"]
    second = json.loads((tmp_path / "metrics.json").read_text())["results"]
    for acceleration, by_method in first.items():
        for method, values in by_method.items():
            for metric in ("NMSE", "PSNR", "SSIM"):
                assert values[metric] == second[acceleration][method][metric]


def test_checkpoint_with_a_data_setting_of_another_version_evaluates(
    trained_run: Path, evaluation: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data key this version does not have (a checkpoint of a newer version) is left out
    with a warning; before, it stopped the evaluation with a config traceback."""
    state = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=False)
    state["config"]["data"]["setting_of_a_newer_version"] = 1
    checkpoint = tmp_path / "newer.pt"
    torch.save(state, checkpoint)
    evaluate(compose_config("eval", [f"checkpoint={checkpoint}", "method=[unet]"]), tmp_path)
    assert "data.setting_of_a_newer_version are not known to this version" in caplog.text
    mine = json.loads((tmp_path / "metrics.json").read_text())["results"]
    first = json.loads((evaluation / "metrics.json").read_text())["results"]
    for acceleration, by_method in mine.items():
        assert by_method["unet"]["SSIM"] == first[acceleration]["unet"]["SSIM"]


def test_test_split_writes_reconstructions_only(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "best.pt"
    evaluate(compose_config("eval", [f"checkpoint={checkpoint}", "split=test"]), tmp_path)
    files = sorted((tmp_path / "reconstructions").rglob("*.h5"))
    assert len(files) == 2 * 3  # 2 test volumes x 3 methods, under their stored acceleration
    assert {f.parent.name for f in files} == {"4", "8"}
    assert json.loads((tmp_path / "metrics.json").read_text())["results"] == {}


def test_baselines_without_checkpoint_and_multicoil(tiny_root: Path, tmp_path: Path) -> None:
    run_cli(
        "mri-recon-eval",
        "method=[zero_filled,tv]",
        # 40 columns keep 3 calibration lines at 4x: maps that poor need more regularization
        # than the value tuned on the demo size.
        "baseline.lam.multicoil.4=0.01",
        f"data.root={tiny_root}",
        "data.challenge=multicoil",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["results"]["4"]) == {"zero_filled", "tv"}
    # Maps from 3 calibration lines are poor: only ask that SENSE-TV stays bounded at 4x.
    # (TV beating zero-filled is tested on the single-coil run and on phantoms in test_tv.py.)
    assert 0 < metrics["results"]["4"]["tv"]["NMSE"]["mean"] < 1
    # Too narrow a center for ESPIRiT's kernel: the center lines' maps, named in the report.
    assert metrics["tv"]["4"]["coil_maps"] == "center_lines"
    assert isinstance(metrics["tv"]["4"]["replaced_slices"], list)
    assert (
        "TV coil maps: center_lines; slices its guard replaced"
        in (tmp_path / "report.md").read_text()
    )


def test_unet_without_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    for methods in ("[zero_filled,tv,learned]", "[unet]"):  # the default, and one by name
        with pytest.raises(UserError, match="needs checkpoint=PATH") as error:
            evaluate(compose_config("eval", [f"method={methods}"]), tmp_path)
        assert "\n" not in str(error.value)


def test_figure_is_logged_to_tensorboard(evaluation: Path) -> None:
    events = EventAccumulator(str(evaluation), size_guidance={"images": 0})
    events.Reload()
    assert "eval/figure" in events.Tags()["images"]
