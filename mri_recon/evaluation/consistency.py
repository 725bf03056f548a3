"""Data consistency for an image model's output: the evaluation's ``<model>_dc`` methods.

An image model (the U-Net) maps the zero-filled magnitude to an image; nothing makes that image
agree with the k-space that was measured, and on multi-coil data the model never sees what the
coils know (the coils' root-sum-of-squares is its input). Its ``_dc`` method keeps the model's
image where the measurements say nothing, and the measurements where they do:

    x* = argmin_x ||M F S x - y||^2 + weight ||x - z||^2,    z = u exp(i angle(S^H F^-1 y))

with M F S the TV baseline's SENSE operator (``baselines.tv``: its coil maps, from
``baseline.maps``; single-coil S = 1), and z the model's magnitude image u with the phase of
the coil-combined zero-filled image (that image itself in the columns outside the model's crop,
phase 1 where it is 0). ``iterations`` conjugate-gradient steps on
(A^H A + weight) x = A^H y + weight z from z solve it; the result is |x| cropped, and the
model's own image where no coil sees signal (outside the ESPIRiT maps' support, where TV's image
is zero: there the solve would only add the measurement noise back). Both terms
scale with the data squared, and A^H A has eigenvalues between 0 and 1, so one ``weight`` means
the same on every file: small weights trust the data (less error where the coils determine the
image, more of the measurement noise), large ones the model (weight -> infinity gives u back).
On the multi-coil demo it takes the U-Net past TV on every metric (docs/results.md).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from mri_recon.baselines.coil_maps import MapSettings
from mri_recon.baselines.tv import SenseOperator, scaled_problem
from mri_recon.config import check_value
from mri_recon.errors import UserError
from mri_recon.models.varnet import conjugate_gradient

DC_SUFFIX = "_dc"  # an image model's name + this: its output made consistent (unet_dc)


def uses_consistency(methods: Iterable[object]) -> bool:
    """Whether any of ``methods`` (names; a config list may hold numbers) is a ``_dc`` method."""
    return any(str(method).endswith(DC_SUFFIX) for method in methods)


@dataclass(frozen=True)
class ConsistencySettings:
    """The solve's settings (configs/eval.yaml ``consistency``, ``baseline.maps``)."""

    weight: float
    iterations: int
    maps: MapSettings = MapSettings()


def check_consistency(cfg: DictConfig) -> None:
    """Raise UserError naming the first ``consistency`` setting of ``cfg`` that cannot work."""
    check_value(cfg, "consistency.iterations", True, lambda v: v >= 1, "an integer >= 1")
    weights = cfg.consistency.weight
    if not isinstance(weights, DictConfig) or not all(
        isinstance(value, DictConfig) for value in weights.values()
    ):
        raise UserError(
            "consistency.weight: expected a weight per challenge and acceleration "
            f"(consistency.weight.multicoil.4=0.003), got {weights!r}"
        )
    for challenge, by_acceleration in weights.items():
        for acceleration in by_acceleration:
            key = f"consistency.weight.{challenge}.{acceleration}"
            check_value(cfg, key, False, lambda v: v > 0, "a positive number")


def consistency_settings(cfg: DictConfig, challenge: str, acceleration: int) -> ConsistencySettings:
    """The settings for this challenge and acceleration (``consistency.weight.<challenge>.<acc>``)."""
    weight = OmegaConf.select(cfg, f"consistency.weight.{challenge}.{acceleration}")
    if weight is None:
        raise UserError(f"consistency.weight.{challenge} has no value for {acceleration}x")
    maps = MapSettings(**OmegaConf.to_container(cfg.baseline.maps))
    return ConsistencySettings(float(weight), cfg.consistency.iterations, maps)


def consistency_notes(cfg: DictConfig, results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """{acceleration: {"weight", "iterations"}} for each acceleration of ``results`` (the
    evaluation's {acceleration: {method: ...}}) that has a ``_dc`` method, for the report."""
    notes = {}
    for acceleration, by_method in results.items():
        if uses_consistency(by_method):
            settings = consistency_settings(cfg, cfg.data.challenge, int(acceleration))
            notes[acceleration] = {"weight": settings.weight, "iterations": settings.iterations}
    return notes


def consistent_images(
    images: torch.Tensor,
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    settings: ConsistencySettings,
) -> torch.Tensor:
    """(B, h, w) float32: ``images`` made consistent with the measured k-space (module docstring).

    images: (B, h, w) a model's magnitudes in the k-space's units; masked_kspace: (B, H, W)
    single-coil or (B, C, H, W) multi-coil complex, on the same device; mask: (B, W) columns.

    The readout (rows) is fully sampled, so after its inverse FFT every image row is a problem
    of its own: the h rows of the model's crop are solved alone, with column FFTs only (the
    same solution as on the whole grid; 4x less work a step at release size).
    """
    problem = scaled_problem(masked_kspace, mask, settings.maps)
    height, width = images.shape[-2:]
    top, left = (masked_kspace.shape[-2] - height) // 2, (masked_kspace.shape[-1] - width) // 2
    rows, columns = slice(top, top + height), slice(left, left + width)
    maps = problem.operator.maps
    operator = SenseOperator(mask, None if maps is None else maps[..., rows, :])
    data = problem.operator.ifft_rows(problem.kspace)[..., rows, :]  # (B, C, h, W)
    adjoint = operator.combine(operator.ifft_columns(data))  # A^H y: the zero-filled image
    phase = torch.where(adjoint == 0, 1, torch.sgn(adjoint))
    start = adjoint.clone()
    scaled = (images / problem.scale[:, None, None]).to(phase.dtype)
    start[..., columns] = scaled * phase[..., columns]

    def normal(x: torch.Tensor) -> torch.Tensor:  # (A^H A + weight) on (B, 1, h, W)
        coils = operator.mask * operator.fft_columns(operator.expand(x[:, 0]))
        return operator.combine(operator.ifft_columns(coils))[:, None] + settings.weight * x

    rhs = (adjoint + settings.weight * start)[:, None]
    x = conjugate_gradient(normal, rhs, start[:, None], settings.iterations)[:, 0]
    found = x[..., columns].abs() * problem.scale[:, None, None]
    return torch.where(problem.support[:, rows, columns], found, images)
