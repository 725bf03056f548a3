"""mri-recon-tune-tv: lam per acceleration over the whole split, never one that makes a volume
worse than zero-filled, the sweep written out; the TV settings checked before any work."""

import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from mri_recon.baselines.tuning import LamScore, choose, sweep, write_tuned
from mri_recon.errors import UserError
from mri_recon.evaluation.run import evaluate

from .conftest import compose_config


def score(ssim: float, worse: list[str]) -> LamScore:
    return LamScore({"NMSE": 1 - ssim, "PSNR": 20.0, "SSIM": ssim}, worse, "espirit")


def test_the_best_lam_that_makes_no_volume_worse_wins() -> None:
    by_lam = {0.001: score(0.81, ["val004.h5"]), 0.01: score(0.80, []), 0.1: score(0.70, [])}
    assert choose(by_lam, "SSIM") == 0.01
    assert choose(by_lam, "NMSE") == 0.01
    everyone_worse = {lam: s._replace(worse=["a.h5"]) for lam, s in by_lam.items()}
    assert choose(everyone_worse, "SSIM") == 0.001  # then the best overall


def test_a_sweep_over_the_whole_split_is_written(tiny_root: Path, tmp_path: Path) -> None:
    output = tmp_path / "tv_tuned.yaml"
    cfg = compose_config(
        "tune_tv",
        [
            f"data.root={tiny_root}",
            "data.challenge=multicoil",
            f"data.cache_dir={tmp_path / 'cache'}",
            "lambdas=[0.001,0.1]",
            f"output={output}",
        ],
    )
    scores = sweep(cfg)
    assert set(scores) == {"4", "8"} and all(
        set(by_lam) == {0.001, 0.1} for by_lam in scores.values()
    )
    write_tuned(cfg, tmp_path, scores)
    table = (tmp_path / "sweep.md").read_text()
    assert table.count("**chosen**") == 2 and "volumes worse than zero-filled" in table
    tuned = yaml.safe_load(output.read_text())
    for acceleration, by_lam in scores.items():
        assert tuned["lam"]["multicoil"][acceleration] == choose(by_lam, "SSIM")
    kept = OmegaConf.to_container(cfg.baseline.lam.singlecoil)  # the other challenge's stay
    assert tuned["lam"]["singlecoil"] == kept
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 1 + 4


@pytest.mark.parametrize(
    "override, message",
    [
        ("baseline.maps.power_iterations=0", "baseline.maps.power_iterations: expected an integer"),
        ("baseline.maps.kernel=0", "baseline.maps.kernel: expected an integer >= 1"),
        ("baseline.iterations=2.5", "baseline.iterations: expected an integer >= 1"),
        ("baseline.maps.crop=1.5", "baseline.maps.crop: expected a fraction in [0, 1)"),
        ("baseline.balance=0.5", "baseline.balance: expected a number > 1 or null"),
    ],
)
def test_a_baseline_setting_that_cannot_work_is_one_line_before_any_work(
    tmp_path: Path, override: str, message: str
) -> None:
    """Evaluation with TV and the tuning both check configs/baseline/ first (a traceback from
    inside ESPIRiT before): no data folder is read, nothing is written."""
    missing = f"data.root={tmp_path / 'no_data'}"
    evaluation = compose_config("eval", ["method=[tv]", missing, override])
    with pytest.raises(UserError, match=re.escape(message)):
        evaluate(evaluation, tmp_path / "eval")
    with pytest.raises(UserError, match=re.escape(message)):
        sweep(compose_config("tune_tv", [missing, override]))
    assert not (tmp_path / "eval").exists()
