"""Our metrics agree with fastmri.evaluate (the reference implementation) to 1e-6."""

import numpy as np
import pytest
from fastmri import evaluate

from mri_recon.metrics import METRICS, summarize, volume_metrics


def test_metrics_agree_with_fastmri_evaluate() -> None:
    rng = np.random.default_rng(0)
    reference = evaluate.Metrics(evaluate.METRIC_FUNCS)
    ours = []
    for _ in range(4):
        target = rng.random((3, 40, 40)) * 1e-4
        prediction = target + rng.normal(scale=1e-5, size=target.shape)
        reference.push(target, prediction)
        ours.append(volume_metrics(target, prediction))
    summary = summarize(ours)
    for name in METRICS:
        assert summary[name]["mean"] == pytest.approx(reference.means()[name], rel=1e-6, abs=1e-6)
        assert summary[name]["std"] == pytest.approx(reference.stddevs()[name], rel=1e-6, abs=1e-6)


def test_perfect_reconstruction_scores() -> None:
    target = np.random.default_rng(1).random((2, 32, 32))
    values = volume_metrics(target, target.copy())
    assert values["NMSE"] == 0 and values["SSIM"] == pytest.approx(1.0) and values["PSNR"] == np.inf


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="slices, H, W"):
        volume_metrics(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
