"""Total-variation compressed sensing, the classical baseline the U-Net must beat.

Solves, for every slice of a batch at once,

    x* = argmin_x  1/2 ||M F S x - y||^2  +  lam * TV(x)

for a complex image x (H, W) on the full k-space grid: M the column mask, F the centered
orthonormal 2-D FFT, S the coil sensitivities (none for single-coil), TV the isotropic total
variation sum |grad x| with periodic forward differences. The solver is ADMM with the splits
w = S x (coil images) and z = grad x, which converges for this non-smooth problem:

    x <- argmin |S x - w + u|^2 + |grad x - z + v|^2     exact: S^H S = I, grad^H grad is
                                                          diagonal in k-space (one FFT pair)
    w <- argmin 1/2 |M F w - y|^2 + rho/2 |w - S x - u|^2 exact per coil in k-space (M masks
                                                          columns only: 1-D FFTs along them)
    z <- shrink(grad x + v, lam / rho)                    isotropic soft-thresholding
    u, v <- u + S x - w, v + grad x - z

Every step is exact and costs FFTs and element-wise work only, batched over slices, the same on
CPU and GPU. The penalty is rho = ``rho_per_lam`` * lam: on the data scaled as below, that rule
converged fastest for lam from 1e-3 to 1e-1 (docs/results.md). Optionally (``balance``) each
slice's rho is balanced every CHECK_EVERY iterations (Boyd et al. 2011, 3.4.1: doubled while the
primal residual is ``balance`` times the dual one, halved in the opposite case, the scaled duals
rescaled); it measured slower here and is off by default. A slice stops when both relative
residuals are below ``tolerance``.

Coil maps (multi-coil) come from ``coil_maps``: ESPIRiT where the center is wide enough, else
the center lines' coil images; outside ESPIRiT's support the result is zero. A guard returns, for
a slice whose solution fits the measured data worse than no image at all, or whose norm grew
past ``growth`` times the zero-filled image's, or that is not finite, that zero-filled image
instead, and says so (``TVResult.diverged``; the evaluation logs the file and slice).

Scale: y is divided by the maximum of the zero-filled coil-combined image before solving (and x
multiplied back), so lam means the same thing on every file whatever the raw units.
"""

import logging
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from fastmri.data.transforms import center_crop
from omegaconf import DictConfig, OmegaConf

from mri_recon.baselines.coil_maps import MapSettings, estimate_maps
from mri_recon.config import check_value
from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.fourier import fft2c, fftc, ifft2c, ifftc

log = logging.getLogger(__name__)

CHECK_EVERY = 5  # iterations between convergence checks
# glibc serves allocations up to 32 MiB from its heap once freed ones were that large; larger ones
# are mapped afresh and page-faulted every time: a CPU solve whose (B, C, H, W) tensors exceed it
# ran three times slower a slice (two release-size slices at once against one).
CPU_CHUNK_BYTES = 2**25


@dataclass(frozen=True)
class TVSettings:
    """Solver settings (configs/baseline/tv.yaml)."""

    lam: float
    iterations: int
    tolerance: float  # stop a slice when both ADMM residuals are below this (relative); 0: never
    rho_per_lam: float = 10.0  # the ADMM penalty a slice starts with: rho = rho_per_lam * lam
    balance: float | None = None  # rho balanced when one residual is this many times the other
    growth: float = 2.0  # guard: a solution whose norm grows past this times the zero-filled's
    maps: MapSettings = MapSettings()


class TVResult(NamedTuple):
    """A batch's TV reconstructions (B, h, w), which slices the guard replaced by their
    zero-filled image (B,) bool, and the coil-map method (``none`` for single-coil)."""

    images: torch.Tensor
    diverged: torch.Tensor
    maps: str


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Periodic forward differences (B, H, W) -> (B, 2, H, W)."""
    return torch.stack([x.roll(-1, dims=-2) - x, x.roll(-1, dims=-1) - x], dim=1)


def gradient_adjoint(grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``gradient`` (minus the divergence): (B, 2, H, W) -> (B, H, W)."""
    rows, cols = grad[:, 0], grad[:, 1]
    return rows.roll(1, dims=-2) - rows + cols.roll(1, dims=-1) - cols


def laplacian_spectrum(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Eigenvalues (H, W) of grad^H grad in the centered k-space of ``fft2c``."""
    rows = 2 - 2 * torch.cos(2 * torch.pi * torch.arange(height, device=device) / height)
    cols = 2 - 2 * torch.cos(2 * torch.pi * torch.arange(width, device=device) / width)
    return torch.fft.fftshift(rows[:, None] + cols[None, :])


class SenseOperator:
    """A x = M F (S x) and its adjoint, for x (B, H, W) and k-space (B, C, H, W).

    The coil maps S are unit norm over coils at every pixel (S^H S = I), which the ADMM x-step
    relies on; single-coil has C = 1 and S = 1. F is the centered FFT; ``uncentered()`` gives the
    same operator in the FFT's natural order, where every FFT saves two copies.
    """

    def __init__(
        self, mask: torch.Tensor, maps: torch.Tensor | None, centered: bool = True
    ) -> None:
        """mask: (B, W) sampled columns; maps: (B, C, H, W) complex or None for single-coil."""
        self.mask = mask.reshape(mask.shape[0], 1, 1, -1).float()
        self.maps = maps
        self.centered = centered

    def uncentered(self) -> "SenseOperator":
        """The operator on ifftshift-ed images and k-space, with plain (uncentered) FFTs."""
        maps = None if self.maps is None else torch.fft.ifftshift(self.maps, dim=(-2, -1))
        return SenseOperator(torch.fft.ifftshift(self.mask, dim=-1)[:, 0, 0], maps, centered=False)

    def fft(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x) if self.centered else torch.fft.fft2(x, norm="ortho")

    def ifft(self, k: torch.Tensor) -> torch.Tensor:
        return ifft2c(k) if self.centered else torch.fft.ifft2(k, norm="ortho")

    def fft_columns(self, x: torch.Tensor) -> torch.Tensor:
        """The FFT along the last dimension (the masked, phase-encoding one) alone."""
        return fftc(x, dim=-1) if self.centered else torch.fft.fft(x, dim=-1, norm="ortho")

    def ifft_columns(self, k: torch.Tensor) -> torch.Tensor:
        return ifftc(k, dim=-1) if self.centered else torch.fft.ifft(k, dim=-1, norm="ortho")

    def ifft_rows(self, k: torch.Tensor) -> torch.Tensor:
        """The inverse FFT along the rows (the fully sampled readout) alone: ``ifft`` is this,
        then ``ifft_columns``."""
        return ifftc(k, dim=-2) if self.centered else torch.fft.ifft(k, dim=-2, norm="ortho")

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Coil images S x: (B, H, W) -> (B, C, H, W)."""
        return x[:, None] if self.maps is None else self.maps * x[:, None]

    def combine(self, coil_images: torch.Tensor) -> torch.Tensor:
        """S^H: (B, C, H, W) -> (B, H, W)."""
        return (
            coil_images[:, 0] if self.maps is None else (self.maps.conj() * coil_images).sum(dim=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * self.fft(self.expand(x))

    def adjoint(self, k: torch.Tensor) -> torch.Tensor:
        return self.combine(self.ifft(self.mask * k))


def tv_objective(
    x: torch.Tensor, operator: SenseOperator, kspace: torch.Tensor, lam: float
) -> torch.Tensor:
    """1/2 ||A x - y||^2 + lam * TV(x) per slice: (B,)."""
    residual = (operator.forward(x) - kspace).abs().pow(2).sum(dim=(1, 2, 3))
    tv = gradient(x).abs().pow(2).sum(dim=1).sqrt().sum(dim=(1, 2))
    return 0.5 * residual + lam * tv


def shrink(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Isotropic soft-thresholding of (B, 2, H, W) gradients: the prox of threshold * |.|."""
    magnitude = v.abs().pow(2).sum(dim=1, keepdim=True).sqrt()
    return v * torch.clamp(1 - threshold / magnitude.clamp(min=1e-12), min=0)


def norms(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each slice of a batch: (B, ...) -> (B,)."""
    return v.abs().pow(2).flatten(1).sum(dim=1).sqrt()


class AdmmState(NamedTuple):
    """The ADMM variables of a batch: image x (B, H, W), coil images (B, C, H, W), gradients
    (B, 2, H, W), their scaled duals, and each slice's penalty rho (B, 1, 1, 1)."""

    x: torch.Tensor
    coils: torch.Tensor
    grad: torch.Tensor
    u_coils: torch.Tensor
    u_grad: torch.Tensor
    rho: torch.Tensor


class Residuals(NamedTuple):
    """Per slice (B,): the primal residual |(S x - w, grad x - z)| and the dual residual
    rho |S^H dw + grad^H dz| (Boyd et al. 2011, 3.3), each also relative to its scale
    (|(S x, grad x)| and rho |S^H u + grad^H v|)."""

    primal: torch.Tensor
    dual: torch.Tensor
    relative_primal: torch.Tensor
    relative_dual: torch.Tensor

    def converged(self, tolerance: float) -> torch.Tensor:
        return (self.relative_primal <= tolerance) & (self.relative_dual <= tolerance)


def admm_step(
    state: AdmmState,
    operator: SenseOperator,
    measured_rows: torch.Tensor,
    spectrum: torch.Tensor,
    lam: float,
) -> tuple[AdmmState, tuple[torch.Tensor, ...]]:
    """One ADMM iteration: the new state, and what its residuals are computed from.

    measured_rows: the masked k-space (B, C, H, W) with its rows inverse transformed
    (``operator.ifft_rows``)."""
    x_old, coils_old, grad_old, u_coils, u_grad, rho = state
    # x: argmin |S x - coils + u_coils|^2 + |grad x - grad_var + u_grad|^2, exact in k-space.
    rhs = operator.combine(coils_old - u_coils) + gradient_adjoint(grad_old - u_grad)
    x = operator.ifft(operator.fft(rhs) / spectrum)
    coil_images, grad_x = operator.expand(x), gradient(x)
    # Coil images: data consistency per coil, exact in k-space. The mask and rho are constant
    # along the rows, so the rows' FFT pair cancels: (y + rho F v) / (M + rho) inverse
    # transformed is F_c^H ((F_r^H y + rho F_c v) / (M + rho)), F_c along the columns alone.
    coils = operator.ifft_columns(
        (measured_rows + rho * operator.fft_columns(coil_images + u_coils)) / (operator.mask + rho)
    )
    grad = shrink(grad_x + u_grad, lam / rho)
    u_coils, u_grad = u_coils + coil_images - coils, u_grad + grad_x - grad
    new = AdmmState(x, coils, grad, u_coils, u_grad, rho)
    return new, (coil_images, grad_x, coils_old, grad_old)


def residuals(
    state: AdmmState, operator: SenseOperator, parts: tuple[torch.Tensor, ...]
) -> Residuals:
    """The residuals of the iteration that gave ``state`` (``admm_step``'s ``parts``)."""
    coil_images, grad_x, coils_old, grad_old = parts
    primal = torch.sqrt(norms(coil_images - state.coils) ** 2 + norms(grad_x - state.grad) ** 2)
    scale = torch.sqrt(norms(coil_images) ** 2 + norms(grad_x) ** 2).clamp(min=1e-12)
    change = norms(
        operator.combine(state.coils - coils_old) + gradient_adjoint(state.grad - grad_old)
    )
    duals = norms(operator.combine(state.u_coils) + gradient_adjoint(state.u_grad))
    rho = state.rho.flatten()
    return Residuals(primal, rho * change, primal / scale, change / duals.clamp(min=1e-12))


def balanced(state: AdmmState, found: Residuals, balance: float) -> AdmmState:
    """Residual balancing: rho doubled where the primal residual is ``balance`` times the dual
    one, halved in the opposite case; the scaled duals divided by the same factor."""
    primal, dual = found.primal, found.dual
    factor = torch.where(
        primal > balance * dual, 2.0, torch.where(dual > balance * primal, 0.5, 1.0)
    )
    factor = factor.to(state.rho.dtype).reshape(state.rho.shape)
    return state._replace(
        u_coils=state.u_coils / factor, u_grad=state.u_grad / factor, rho=state.rho * factor
    )


def solve_tv(
    kspace: torch.Tensor, operator: SenseOperator, settings: TVSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """ADMM for the TV problem; returns (x (B, H, W), iterations run per slice (B,)).

    kspace: (B, C, H, W) complex, already scaled to about unit image maximum. Every
    ``CHECK_EVERY`` iterations a slice whose relative residuals are below ``tolerance`` stops
    changing (and with ``balance`` each slice's penalty is balanced), so a batch gives the same
    result as its slices one at a time. The iterations run in the FFT's natural order (periodic
    TV does not see the shift).
    """
    centered = operator.centered
    if centered:
        operator = operator.uncentered()
        kspace = torch.fft.ifftshift(kspace, dim=(-2, -1))
    batch = kspace.shape[0]
    spectrum = 1 + laplacian_spectrum(*kspace.shape[-2:], kspace.device)  # of S^H S + grad^H grad
    spectrum = torch.fft.ifftshift(spectrum)  # the natural order of a plain FFT
    measured_rows = operator.ifft_rows(operator.mask * kspace)
    x = operator.adjoint(kspace)
    coils, grad = operator.expand(x), gradient(x)
    rho = torch.full((batch, 1, 1, 1), settings.rho_per_lam * settings.lam, device=x.device)
    state = AdmmState(x, coils, grad, torch.zeros_like(coils), torch.zeros_like(grad), rho)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
    for iteration in range(1, settings.iterations + 1):
        new, parts = admm_step(state, operator, measured_rows, spectrum, settings.lam)
        check = settings.tolerance > 0 and iteration % CHECK_EVERY == 0
        balance = settings.balance is not None and iteration % CHECK_EVERY == 0
        if check or balance:
            found = residuals(new, operator, parts)
            if balance:
                new = balanced(new, found, settings.balance)
        state = new if active.all() else keep_active(new, state, active)
        iterations += active.long()
        if check:
            active &= ~found.converged(settings.tolerance)
            if not active.any():
                break
    x = state.x
    return (torch.fft.fftshift(x, dim=(-2, -1)) if centered else x), iterations


def keep_active(new: AdmmState, old: AdmmState, active: torch.Tensor) -> AdmmState:
    """``new`` for the active slices, ``old`` for those that have converged."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(active.reshape(-1, *[1] * (a.dim() - 1)), a, b)

    return AdmmState(*(pick(a, b) for a, b in zip(new, old, strict=True)))


class ScaledProblem(NamedTuple):
    """A batch's SENSE problem: k-space (B, C, H, W) divided by ``scale`` (B,), the operator
    (coil maps estimated for multi-coil), the support (B, H, W) bool, the map method."""

    kspace: torch.Tensor
    operator: SenseOperator
    scale: torch.Tensor
    support: torch.Tensor
    method: str


def scaled_problem(
    masked_kspace: torch.Tensor, mask: torch.Tensor, maps: MapSettings | None = None
) -> ScaledProblem:
    """The SENSE problem of a batch, scaled to unit zero-filled image maximum, so lam means the
    same thing on every file.

    masked_kspace: (B, H, W) single-coil or (B, C, H, W) multi-coil complex; mask: (B, W).
    """
    if masked_kspace.dim() == 3:
        masked_kspace, coil_maps, method = masked_kspace[:, None], None, "none"
        support = torch.ones(
            masked_kspace.shape[0],
            *masked_kspace.shape[-2:],
            dtype=torch.bool,
            device=masked_kspace.device,
        )
    else:
        coil_maps, support, method = estimate_maps(masked_kspace, mask, maps or MapSettings())
    operator = SenseOperator(mask, coil_maps)
    scale = operator.adjoint(masked_kspace).abs().amax(dim=(1, 2)).clamp(min=1e-20)
    return ScaledProblem(
        masked_kspace / scale[:, None, None, None], operator, scale, support, method
    )


def diverged(
    x: torch.Tensor,
    start: torch.Tensor,
    operator: SenseOperator,
    kspace: torch.Tensor,
    growth: float,
) -> torch.Tensor:
    """(B,) slices whose solution is not finite, fits the measured k-space worse than no image
    at all, or has grown past ``growth`` times the norm of ``start`` (the zero-filled image)."""
    finite = torch.isfinite(torch.view_as_real(x)).flatten(1).all(dim=1)
    worse_than_nothing = norms(operator.forward(x) - kspace) > norms(operator.mask * kspace)
    grown = norms(x) > growth * norms(start)
    return ~finite | worse_than_nothing | grown


def tv_solve(
    masked_kspace: torch.Tensor, mask: torch.Tensor, crop: tuple[int, int], settings: TVSettings
) -> TVResult:
    """TV reconstructions of a batch, magnitude cropped to ``crop``, in the k-space's own units,
    with the guard applied (module docstring).

    masked_kspace: (B, H, W) single-coil or (B, C, H, W) multi-coil complex; mask: (B, W) columns.
    """
    problem = scaled_problem(masked_kspace, mask, settings.maps)
    return solve_scaled(problem, crop, settings)


def solve_scaled(problem: ScaledProblem, crop: tuple[int, int], settings: TVSettings) -> TVResult:
    """``tv_solve`` of a problem ``scaled_problem`` set up (so that one volume's coil maps serve
    every lam of a sweep)."""
    kspace, operator, scale, support, method = problem
    x, _ = solve_tv(kspace, operator, settings)
    start = operator.adjoint(kspace)
    bad = diverged(x, start, operator, kspace, settings.growth)
    x = torch.where(bad[:, None, None], start, x * support)
    return TVResult(center_crop(x, crop).abs() * scale[:, None, None], bad, method)


def tv_reconstruct(
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    crop: tuple[int, int],
    settings: TVSettings,
) -> torch.Tensor:
    """``tv_solve``'s images alone: (B, crop[0], crop[1]) real."""
    return tv_solve(masked_kspace, mask, crop, settings).images


SETTING_RULES = [  # configs/baseline/tv.yaml's numbers: key, integer?, valid, what is expected
    ("iterations", True, lambda v: v >= 1, "an integer >= 1"),
    ("tolerance", False, lambda v: v >= 0, "a number >= 0"),
    ("rho_per_lam", False, lambda v: v > 0, "a positive number"),
    ("growth", False, lambda v: v > 0, "a positive number"),
    ("batch_size", True, lambda v: v >= 1, "an integer >= 1"),
    ("maps.kernel", True, lambda v: v >= 1, "an integer >= 1"),
    ("maps.calibration_rows", True, lambda v: v >= 1, "an integer >= 1"),
    ("maps.threshold", False, lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("maps.crop", False, lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("maps.min_espirit_columns", True, lambda v: v >= 1, "an integer >= 1"),
    ("maps.power_iterations", True, lambda v: v >= 1, "an integer >= 1"),
]


def check_baseline(cfg: DictConfig) -> None:
    """Raise UserError naming the first ``baseline`` setting of ``cfg`` that cannot work."""
    for key, integer, valid, expected in SETTING_RULES:
        check_value(cfg, f"baseline.{key}", integer, valid, expected)
    if cfg.baseline.balance is not None:
        check_value(cfg, "baseline.balance", False, lambda v: v > 1, "a number > 1 or null")


def tv_settings(
    baseline: DictConfig, challenge: str, acceleration: int, lam: float | None = None
) -> TVSettings:
    """The solver settings of ``baseline`` (configs/baseline/), with ``lam`` or else the
    configured weight for this challenge and acceleration (``baseline.lam.<challenge>.<acc>``)."""
    if lam is None:
        lam = OmegaConf.select(baseline, f"lam.{challenge}.{acceleration}")
        if lam is None:
            raise UserError(f"baseline.lam.{challenge} has no value for {acceleration}x")
    maps = MapSettings(**OmegaConf.to_container(baseline.maps))
    return TVSettings(
        float(lam),
        baseline.iterations,
        baseline.tolerance,
        baseline.rho_per_lam,
        baseline.balance,
        baseline.growth,
        maps,
    )


def tv_volume(
    batch: Sample, settings: TVSettings, device: torch.device, batch_size: int
) -> TVResult:
    """TV reconstruction of one volume batch (``keep_kspace`` samples), ``batch_size`` slices at
    a time on ``device``: images (slices, H, W) float32 on the CPU, the guard's slices, the maps."""
    return tv_volume_lambdas(batch, settings, [settings.lam], device, batch_size)[0]


def tv_volume_lambdas(
    batch: Sample,
    settings: TVSettings,
    lambdas: list[float],
    device: torch.device,
    batch_size: int,
) -> list[TVResult]:
    """``tv_volume`` at each of ``lambdas`` (``settings`` otherwise), the coil maps of each
    ``batch_size`` slices estimated once for all of them."""
    crop = tuple(batch.image.shape[-2:])
    parts: list[list[TVResult]] = [[] for _ in lambdas]
    batch_size = slices_per_chunk(batch.masked_kspace, batch_size, device)
    for i in range(0, len(batch.fname), batch_size):
        kspace = batch.masked_kspace[i : i + batch_size].to(device)
        problem = scaled_problem(kspace, batch.mask[i : i + batch_size].to(device), settings.maps)
        for results, lam in zip(parts, lambdas, strict=True):
            results.append(solve_scaled(problem, crop, replace(settings, lam=lam)))
    return [joined(batch, results, lam) for results, lam in zip(parts, lambdas, strict=True)]


def slices_per_chunk(kspace: torch.Tensor, batch_size: int, device: torch.device) -> int:
    """``batch_size``, or on a CPU at most as many slices as keep one (B, C, H, W) complex
    tensor of the solver within CPU_CHUNK_BYTES (at least one)."""
    if device.type != "cpu":
        return batch_size
    slice_bytes = kspace[0].numel() * 8  # complex64
    return max(1, min(batch_size, CPU_CHUNK_BYTES // slice_bytes))


def joined(batch: Sample, parts: list[TVResult], lam: float) -> TVResult:
    """One volume's result from its chunks' (images on the CPU in float32); each slice the guard
    replaced is logged with its file and slice number."""
    images = torch.cat([part.images.cpu() for part in parts]).to(torch.float32)
    bad = torch.cat([part.diverged.cpu() for part in parts])
    for index in bad.nonzero().flatten().tolist():
        log.warning(
            "TV (lam %g): %s slice %d diverged (its norm or data residual grew past the "
            "zero-filled image's); its zero-filled image is returned instead",
            lam,
            batch.fname[index],
            int(batch.slice_num[index]),
        )
    return TVResult(images, bad, parts[0].maps)
