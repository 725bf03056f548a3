"""Total-variation compressed sensing, the classical baseline the U-Net must beat.

Solves, for every slice of a batch at once,

    x* = argmin_x  1/2 ||M F S x - y||^2  +  lam * TV(x)

for a complex image x (H, W) on the full k-space grid: M the column mask, F the centered
orthonormal 2-D FFT, S the coil sensitivities (none for single-coil), TV the isotropic total
variation sum |grad x| with periodic forward differences. The solver is ADMM with the splits
w = S x (coil images) and z = grad x, which converges for this non-smooth problem:

    x <- argmin |S x - w + u|^2 + |grad x - z + v|^2     exact: S^H S = I, grad^H grad is
                                                          diagonal in k-space (one FFT pair)
    w <- argmin 1/2 |M F w - y|^2 + rho/2 |w - S x - u|^2 exact per coil in k-space
    z <- shrink(grad x + v, lam / rho)                    isotropic soft-thresholding
    u, v <- u + S x - w, v + grad x - z

Every step is exact and costs FFTs and element-wise work only, batched over slices, the same on
CPU and GPU. The penalty rho is a fixed multiple of lam: with the data scaled to unit image
maximum, that multiple converges in about the same number of iterations for every lam.

Scale: y is divided by the maximum of the zero-filled coil-combined image before solving (and x
multiplied back), so lam means the same thing on every file whatever the raw units.
"""

from dataclasses import dataclass

import numpy as np
import torch
from fastmri.data.transforms import center_crop
from omegaconf import DictConfig, OmegaConf

from mri_recon.data.transforms import Sample
from mri_recon.errors import UserError
from mri_recon.fourier import fft2c, ifft2c

CHECK_EVERY = 5  # iterations between convergence checks


@dataclass(frozen=True)
class TVSettings:
    """Solver settings (configs/baseline/tv.yaml)."""

    lam: float
    iterations: int
    tolerance: float  # stop a slice when both ADMM residuals are below this (relative); 0: never
    rho_per_lam: float = 10.0  # ADMM penalty rho = rho_per_lam * lam


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


def center_columns(mask: torch.Tensor) -> torch.Tensor:
    """Number of contiguous sampled columns around the center of each (B, W) mask."""
    width = mask.shape[-1]
    center = width // 2
    sampled = mask.bool()
    right = torch.cumprod(sampled[:, center:].int(), dim=1).sum(dim=1)
    left = torch.cumprod(sampled[:, :center].flip(1).int(), dim=1).sum(dim=1)
    return left + right


COVARIANCE_BYTES = 2**29  # slices per chunk are chosen so a chunk's coil covariance fits this


def estimate_sensitivities(
    kspace: torch.Tensor, mask: torch.Tensor, kernel: int = 5, power_iterations: int = 4
) -> torch.Tensor:
    """Coil maps (B, C, H, W), unit norm over coils, from the fully sampled k-space center.

    Walsh's adaptive-combine estimator: at each pixel, the dominant eigenvector of the coil
    covariance of the low-resolution coil images over a kernel x kernel window (found by power
    iteration, started from the images divided by their root-sum-of-squares). It is the
    image-space counterpart of ESPIRiT's eigenvector maps, needs only the calibration lines the
    mask keeps, and runs batched on CPU or GPU. Phases are aligned to the first coil. Slices are
    processed in chunks whose (C, C, H, W) covariances fit in COVARIANCE_BYTES.
    """
    batch, coils, height, width = kspace.shape
    columns = torch.arange(width, device=kspace.device)
    num_low = center_columns(mask)
    left = width // 2 - num_low // 2
    # A Hann taper over the calibration lines (zero elsewhere) limits Gibbs ringing.
    position = (columns[None] - left[:, None] + 0.5) / num_low[:, None].clamp(min=1)
    window = torch.where((position > 0) & (position < 1), torch.sin(torch.pi * position) ** 2, 0.0)
    images = ifft2c(kspace * window[:, None, None, :])  # (B, C, H, W) low resolution

    chunk = max(1, COVARIANCE_BYTES // (coils * coils * height * width * 8))
    return torch.cat(
        [dominant_coil_vectors(part, kernel, power_iterations) for part in images.split(chunk)]
    )


def unit_over_coils(vectors: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) scaled to unit norm over coils; pixels with no signal get equal weights, so
    that S^H S = I holds everywhere."""
    norm = vectors.abs().pow(2).sum(dim=1, keepdim=True).sqrt()
    uniform = torch.full_like(vectors, vectors.shape[1] ** -0.5)
    return torch.where(norm > 1e-12, vectors / norm.clamp(min=1e-12), uniform)


def dominant_coil_vectors(images: torch.Tensor, kernel: int, power_iterations: int) -> torch.Tensor:
    """Per pixel, the dominant eigenvector of the windowed coil covariance of (b, C, H, W)
    images: unit norm over coils, phase relative to the first coil."""
    batch, coils, height, width = images.shape
    covariance = images[:, :, None] * images[:, None].conj()  # (b, C, C, H, W)
    flat = torch.view_as_real(covariance).permute(0, 1, 2, 5, 3, 4).reshape(-1, 1, height, width)
    flat = torch.nn.functional.avg_pool2d(
        flat, kernel, stride=1, padding=kernel // 2, count_include_pad=False
    )
    covariance = torch.view_as_complex(
        flat.reshape(batch, coils, coils, 2, height, width).permute(0, 1, 2, 4, 5, 3).contiguous()
    )
    vectors = unit_over_coils(images)
    for _ in range(power_iterations):
        vectors = unit_over_coils(torch.einsum("bijhw,bjhw->bihw", covariance, vectors))
    reference = vectors[:, :1]
    return vectors * (reference.conj() / (reference.abs() + 1e-12))


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


def solve_tv(
    kspace: torch.Tensor, operator: SenseOperator, settings: TVSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """ADMM for the TV problem; returns (x (B, H, W), iterations run per slice (B,)).

    kspace: (B, C, H, W) complex, already scaled to about unit image maximum. Every
    ``CHECK_EVERY`` iterations a slice whose relative primal and dual residuals are below
    ``tolerance`` stops changing, so a batch gives the same result as its slices one at a time.
    The iterations run in the FFT's natural order (periodic TV does not see the shift).
    """
    centered = operator.centered
    if centered:
        operator = operator.uncentered()
        kspace = torch.fft.ifftshift(kspace, dim=(-2, -1))
    batch = kspace.shape[0]
    spectrum = 1 + laplacian_spectrum(*kspace.shape[-2:], kspace.device)  # of S^H S + grad^H grad
    spectrum = torch.fft.ifftshift(spectrum)  # the natural order of a plain FFT
    mask, measured = operator.mask, operator.mask * kspace
    x = operator.adjoint(kspace)
    coils, grad = operator.expand(x), gradient(x)
    u_coils, u_grad = torch.zeros_like(coils), torch.zeros_like(grad)
    rho = settings.rho_per_lam * settings.lam
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
    for iteration in range(1, settings.iterations + 1):
        # x: argmin |S x - coils + u_coils|^2 + |grad x - grad_var + u_grad|^2, exact in k-space.
        rhs = operator.combine(coils - u_coils) + gradient_adjoint(grad - u_grad)
        x_new = operator.ifft(operator.fft(rhs) / spectrum)
        coil_images, grad_x = operator.expand(x_new), gradient(x_new)
        # Coil images: data consistency per coil, exact in k-space.
        coils_new = operator.ifft(
            (measured + rho * operator.fft(coil_images + u_coils)) / (mask + rho)
        )
        grad_new = shrink(grad_x + u_grad, settings.lam / rho)
        u_coils_new = u_coils + coil_images - coils_new
        u_grad_new = u_grad + grad_x - grad_new

        check = settings.tolerance > 0 and iteration % CHECK_EVERY == 0
        if check:
            primal = torch.sqrt(norms(coil_images - coils_new) ** 2 + norms(grad_x - grad_new) ** 2)
            primal /= torch.sqrt(norms(coil_images) ** 2 + norms(grad_x) ** 2).clamp(min=1e-12)
            dual = norms(operator.combine(coils_new - coils) + gradient_adjoint(grad_new - grad))
            dual /= norms(operator.combine(u_coils_new) + gradient_adjoint(u_grad_new)).clamp(
                min=1e-12
            )
        if active.all():
            x, coils, grad, u_coils, u_grad = x_new, coils_new, grad_new, u_coils_new, u_grad_new
        else:
            keep = active[:, None, None, None]
            x = torch.where(keep[:, 0], x_new, x)
            coils, grad = torch.where(keep, coils_new, coils), torch.where(keep, grad_new, grad)
            u_coils = torch.where(keep, u_coils_new, u_coils)
            u_grad = torch.where(keep, u_grad_new, u_grad)
        iterations += active.long()
        if check:
            active &= (primal > settings.tolerance) | (dual > settings.tolerance)
            if not active.any():
                break
    return (torch.fft.fftshift(x, dim=(-2, -1)) if centered else x), iterations


def scaled_problem(
    masked_kspace: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, SenseOperator, torch.Tensor]:
    """The SENSE problem of a batch, scaled to unit zero-filled image maximum.

    masked_kspace: (B, H, W) single-coil or (B, C, H, W) multi-coil complex; mask: (B, W).
    Returns (k-space (B, C, H, W) divided by the scale, the operator (coil maps estimated for
    multi-coil), the scale (B,)), so lam means the same thing on every file.
    """
    if masked_kspace.dim() == 3:
        masked_kspace, maps = masked_kspace[:, None], None
    else:
        maps = estimate_sensitivities(masked_kspace, mask)
    operator = SenseOperator(mask, maps)
    scale = operator.adjoint(masked_kspace).abs().amax(dim=(1, 2)).clamp(min=1e-20)
    return masked_kspace / scale[:, None, None, None], operator, scale


def tv_reconstruct(
    masked_kspace: torch.Tensor,
    mask: torch.Tensor,
    crop: tuple[int, int],
    settings: TVSettings,
) -> torch.Tensor:
    """TV reconstructions, magnitude cropped to ``crop``, in the k-space's own units.

    masked_kspace: (B, H, W) single-coil or (B, C, H, W) multi-coil complex; mask: (B, W) columns.
    Returns (B, crop[0], crop[1]) real.
    """
    kspace, operator, scale = scaled_problem(masked_kspace, mask)
    x, _ = solve_tv(kspace, operator, settings)
    return center_crop(x, crop).abs() * scale[:, None, None]


def tv_settings(
    baseline: DictConfig, challenge: str, acceleration: int, lam: float | None = None
) -> TVSettings:
    """The solver settings of ``baseline`` (configs/baseline/), with ``lam`` or else the
    configured weight for this challenge and acceleration (``baseline.lam.<challenge>.<acc>``)."""
    if lam is None:
        lam = OmegaConf.select(baseline, f"lam.{challenge}.{acceleration}")
        if lam is None:
            raise UserError(f"baseline.lam.{challenge} has no value for {acceleration}x")
    return TVSettings(float(lam), baseline.iterations, baseline.tolerance, baseline.rho_per_lam)


def tv_volume(
    batch: Sample, settings: TVSettings, device: torch.device, batch_size: int
) -> np.ndarray:
    """TV reconstruction (slices, H, W) float32 of one volume batch (``keep_kspace`` samples),
    ``batch_size`` slices at a time on ``device``."""
    crop = tuple(batch.image.shape[-2:])
    outputs = [
        tv_reconstruct(
            batch.masked_kspace[i : i + batch_size].to(device),
            batch.mask[i : i + batch_size].to(device),
            crop,
            settings,
        ).cpu()
        for i in range(0, len(batch.fname), batch_size)
    ]
    return torch.cat(outputs).numpy().astype(np.float32)
