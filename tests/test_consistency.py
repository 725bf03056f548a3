"""Data consistency for an image model's output (``unet_dc``): the solve, its limits, the
evaluation's method names and config checks, and the method through the real CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastmri.data.transforms import center_crop
from omegaconf import OmegaConf

from mri_recon.baselines.coil_maps import MapSettings
from mri_recon.baselines.tv import scaled_problem
from mri_recon.data.transforms import EMPTY, Sample
from mri_recon.errors import UserError
from mri_recon.evaluation.consistency import ConsistencySettings, consistent_images
from mri_recon.evaluation.methods import Reconstructor, resolve_methods
from mri_recon.evaluation.run import evaluate
from mri_recon.fourier import fft2c, ifft2c

from .conftest import compose_config, run_cli
from .test_tv import column_mask, phantom, smooth_maps

CROP = (24, 20)


def multicoil_slice(
    size: int = 32, center_fraction: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(truth (1, size, size), masked k-space (1, 4, size, size), mask (1, size)) at 4x."""
    truth = phantom(size)[None] * 3e-4  # scanner-like units: the solve must not depend on them
    mask = column_mask(4, center_fraction, seed=3, width=size)
    kspace = mask[:, None, None, :] * fft2c(smooth_maps(4, size) * truth[:, None])
    return truth, kspace, mask


def test_the_solution_is_the_regularized_least_squares_one() -> None:
    """Against a dense solve of (A^H A + w) x = A^H y + w z with the same operator and the
    documented z (the model's magnitude with the zero-filled image's phase in the crop)."""
    truth, kspace, mask = multicoil_slice(16)
    images = center_crop(truth.abs() * 1.3, (12, 10)).float()  # a model's (wrong) image
    settings = ConsistencySettings(weight=0.05, iterations=300, maps=MapSettings("center_lines"))
    found = consistent_images(images, kspace, mask, settings)

    problem = scaled_problem(kspace, mask, settings.maps)
    operator, size = problem.operator, 16 * 16
    basis = torch.eye(size, dtype=torch.complex64).reshape(size, 16, 16)
    matrix = operator.forward(basis).reshape(size, -1).T  # (measurements, pixels)
    adjoint = operator.adjoint(problem.kspace)[0]
    z = adjoint.clone()
    phase = torch.sgn(adjoint[2:14, 3:13])
    z[2:14, 3:13] = images[0] / problem.scale[0] * phase
    normal = matrix.conj().T @ matrix + 0.05 * torch.eye(size)
    dense = torch.linalg.solve(normal, adjoint.flatten() + 0.05 * z.flatten()).reshape(16, 16)
    expected = dense[2:14, 3:13].abs() * problem.scale[0]
    torch.testing.assert_close(found[0], expected, rtol=1e-3, atol=1e-3 * float(expected.max()))


def test_a_large_weight_keeps_the_model_and_a_small_one_the_measurements() -> None:
    truth, kspace, mask = multicoil_slice()
    target = center_crop(truth.abs(), CROP).float()
    model = target * (
        1 + 0.2 * torch.rand(target.shape, generator=torch.Generator().manual_seed(0))
    )
    kept = consistent_images(model, kspace, mask, ConsistencySettings(1e6, 30))
    torch.testing.assert_close(kept, model, rtol=1e-4, atol=1e-4 * float(target.max()))
    # Fully sampled single-coil k-space determines the image: a small weight gives it back
    # whatever the model said (and the magnitude only: the phase comes from the data).
    full = fft2c(truth)
    measured = consistent_images(model, full, torch.ones(1, 32), ConsistencySettings(1e-6, 30))
    torch.testing.assert_close(measured, target, rtol=1e-4, atol=1e-4 * float(target.max()))
    assert (model - target).abs().max() > 0.05 * target.max()


def test_consistency_brings_a_blurred_model_image_closer_to_the_truth() -> None:
    """Multi-coil, 4x, ESPIRiT maps estimated from the data: the measured lines put back part
    of what a blurred image lost. (Part: on this phantom, whose smooth coils make the SENSE
    problem ill-conditioned, even the true maps' least-squares image is 0.5 off; TV's prior
    suits it.)"""
    truth, kspace, mask = multicoil_slice(64, center_fraction=0.125)  # 8 lines: ESPIRiT
    target = center_crop(truth.abs(), (48, 48)).float()
    blurred = ifft2c(fft2c(truth) * torch.hann_window(64, periodic=False)[None, :]).abs()
    model = center_crop(blurred, (48, 48)).float()
    found = consistent_images(model, kspace, mask, ConsistencySettings(0.01, 30))
    error_before = (model - target).norm() / target.norm()
    error_after = (found - target).norm() / target.norm()
    assert error_after < 0.9 * error_before


def test_where_no_coil_sees_signal_the_model_s_image_is_kept() -> None:
    """Outside the ESPIRiT maps' support (where TV's image is zero) the solve would only bring
    the measurement noise back: the model's image stays there, the solve's inside."""
    truth, kspace, mask = multicoil_slice(64, center_fraction=0.125)
    kspace = kspace + 1e-6 * torch.randn(kspace.shape, dtype=kspace.dtype) * (kspace != 0)
    model = center_crop(truth.abs(), (48, 48)).float() * 0.9
    found = consistent_images(model, kspace, mask, ConsistencySettings(0.01, 30))
    support = center_crop(scaled_problem(kspace, mask).support, (48, 48))
    assert 0 < int(support.sum()) < support.numel()
    assert torch.equal(found[~support], model[~support])
    assert not torch.allclose(found[support], model[support])


def test_dc_methods_resolve_for_image_models_only() -> None:
    kinds = {"unet": "image", "varnet": "kspace"}
    assert resolve_methods(["zero_filled", "unet", "unet_dc"], kinds) == [
        "zero_filled",
        "unet",
        "unet_dc",
    ]
    assert resolve_methods(["learned", "unet_dc"], kinds) == ["unet", "varnet", "unet_dc"]
    with pytest.raises(UserError, match="data consistency is for image models \\(unet_dc\\)"):
        resolve_methods(["varnet_dc"], kinds)
    with pytest.raises(UserError, match="needs checkpoint=PATH"):
        resolve_methods(["unet_dc"], {})
    with pytest.raises(
        UserError, match="'learned', 'unet', 'varnet', 'unet_dc'\\], got 'unet_2_dc'"
    ):
        resolve_methods(["unet_2_dc"], kinds)
    with pytest.raises(UserError, match="got '4'"):  # method=[4]: Hydra makes it an integer
        resolve_methods([4], kinds)


def test_a_model_asked_for_beside_its_dc_method_runs_once() -> None:
    """``method=[unet_dc,unet]``: the U-Net runs once, and ``unet_dc`` is charged its time."""
    runs = []

    class Counting(Reconstructor):
        def learned(self, batch: Sample, model: object) -> np.ndarray:
            runs.append(model)
            return np.zeros((1, 2, 2), dtype=np.float32)

        def consistent(self, batch: Sample, acceleration: int, images: np.ndarray) -> np.ndarray:
            return images + 1

    reconstructor = Counting(OmegaConf.create({}), ["unet_dc", "unet"], {"unet": "net"}, None)
    volumes, seconds = reconstructor(Sample(EMPTY, EMPTY), 4)
    assert runs == ["net"] and set(volumes) == {"unet", "unet_dc"}
    assert (volumes["unet_dc"] == 1).all() and seconds["unet_dc"] >= seconds["unet"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("consistency.iterations=0", "consistency.iterations: expected an integer >= 1, got 0"),
        ("consistency.weight.multicoil.4=-1", "consistency.weight.multicoil.4: expected a posi"),
        ("consistency.weight=3", "consistency.weight: expected a weight per challenge and acce"),
    ],
)
def test_a_bad_consistency_setting_is_one_line_before_any_work(
    override: str, message: str, tmp_path: Path
) -> None:
    """Checked before the checkpoint is read (it does not exist here)."""
    cfg = compose_config("eval", ["checkpoint=/nowhere/best.pt", "method=[unet_dc]", override])
    with pytest.raises(UserError, match=message) as error:
        evaluate(cfg, tmp_path)
    assert "\n" not in str(error.value)


def test_unet_dc_through_the_cli(trained_run: Path, tmp_path: Path) -> None:
    """``method=[unet,unet_dc]``: both in metrics.json and the report, different images, the
    consistent one with the lower error (a 2-epoch U-Net leaves much for the data to fix)."""
    run_cli(
        "mri-recon-eval",
        f"checkpoint={trained_run / 'checkpoints' / 'best.pt'}",
        "method=[unet,unet_dc]",
        "save_reconstructions=true",
        f"hydra.run.dir={tmp_path}",
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = metrics["results"]
    weights = compose_config("eval", []).consistency.weight.singlecoil  # configs/eval.yaml's
    assert metrics["consistency"] == {
        acceleration: {"weight": weights[acceleration], "iterations": 30}
        for acceleration in ("4", "8")
    }
    for acceleration in ("4", "8"):
        unet, consistent = results[acceleration]["unet"], results[acceleration]["unet_dc"]
        assert consistent["NMSE"]["mean"] < unet["NMSE"]["mean"]
        assert consistent["seconds_per_slice"] > unet["seconds_per_slice"]
    report = (tmp_path / "report.md").read_text()
    assert "| unet_dc |" in report
    assert (
        f"Data consistency (`_dc`): weight {weights['4']:g}, 30 conjugate-gradient steps" in report
    )
    assert len(list((tmp_path / "reconstructions" / "unet_dc").rglob("*.h5"))) == 2 * 2
