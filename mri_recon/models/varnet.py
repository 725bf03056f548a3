"""End-to-end variational network (Sriram et al., 2020): a k-space model that keeps the physics.

    maps   = SensitivityNet(center lines of the masked k-space)             (B, C, H, W), sum |maps|^2 = 1
    k_0    = masked k-space (start="zero_filled"), or F S x_SENSE (start="sense")
    k_t+1  = k_t - w_t * M (k_t - k_0) - F S U_t(S^H F^-1 k_t)          a cascade: soft data
                                                                         consistency + a U-Net
    image  = RSS over coils of |F^-1 k_T|, cropped to the target size

with F the centered 2-D FFT, M the sampled columns, S the sensitivity maps (expand: x -> F(S x),
reduce: sum_c conj(S_c) F^-1 k_c) and U_t a U-Net on the complex coil-combined image. Every U-Net
here is ``models.unet.Unet`` (``norm``: group by default, the lecture's; instance is fastMRI's);
with ``norm="instance"`` the network is fastmri.models.VarNet layer for layer, and
``from_fastmri`` loads its weights (published pretrained models included).

The cascades run on k-space times a fixed phase ramp (``fourier.centering_ramps``; +-1 at even
sizes) with the maps times its image-side counterpart: there the centered FFTs are plain FFTs
(no fftshift copies; 6-9% faster steps on the multi-coil demo) and the network is unchanged.

``crop_readout=True`` first removes the readout oversampling: the k-space is replaced by that of
its image cropped to the target's rows (exact, the readout being fully sampled), which halves the
cascades' work on fastMRI's 2x oversampled data. Off by default, as fastMRI's VarNet works on the
full readout: on the multi-coil demo its steps are 1.5x faster, but runs with it ended lower in
equal steps and in equal time (docs/results.md).

``sens_maps="espirit"`` (with ``sens_chans=0``) takes the maps from the same center columns by
ESPIRiT instead (``baselines.coil_maps``, the TV baseline's maps with its default settings: a
fifth less map error than the center lines' images at 8x on the multi-coil demo, and 0.787
against 0.757 val SSIM in equal steps; docs/results.md). No network learns them; they cost
about 0.05 s a demo slice on a 2-core CPU (a step 0.21 s against 0.18), and
``experiment=varnet_multicoil`` takes them (ahead in equal time too, two seeds).

``start="sense"`` begins the cascades from the SENSE image of those maps instead of the measured
k-space: ``sense_iterations`` conjugate-gradient steps on A^H A x = A^H y (A = M F S, stopped
early, no regularizer), in full precision and outside the gradient (``sense_start``). The
cascades then refine an image the coils have already unfolded, where from the measured k-space
their soft data consistency must unfold it one small step at a time.

``data_consistency="proximal"`` replaces each cascade by MoDL's step (Aggarwal et al. 2019,
``ProximalCascade``): the U-Net corrects the coil-combined image, then the data consistency is
solved by ``dc_iterations`` conjugate-gradient steps on the SENSE model with a learned weight
instead of stepped towards the measured columns, so the coils unfold the image in every cascade
(on the multi-coil demo ahead of the gradient step and of TV on every metric in equal time,
each step 1.3x the time with 3 steps; docs/results.md). fastMRI's weights load only into the
gradient form.

Single-coil (``challenge="singlecoil"``): one coil, no sensitivity network (S = 1), the cascades'
data consistency in k-space as above (fastMRI's VarNet has no single-coil form).
"""

import math
import re
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from mri_recon.baselines import coil_maps
from mri_recon.errors import UserError
from mri_recon.fourier import centering_ramps, crop_readout, ifft2c
from mri_recon.models.unet import Unet

MIN_CENTER_LINES = 2  # fully sampled center columns the sensitivity network needs at least
MAP_SOURCES = ("center_lines", "espirit")
STARTS = ("zero_filled", "sense")
DATA_CONSISTENCIES = ("gradient", "proximal")
PROXIMAL_WEIGHT_START = 0.1  # ProximalCascade's w before training (MoDL's: 0.05)
CG_TOLERANCE = 1e-10  # sense_start: a sample's squared residual norm, relative to its first


class NormUnet(nn.Module):
    """A U-Net on complex images (N, 1, H, W): real and imaginary parts as two channels, each
    normalized by its mean and std, zero-padded to a multiple of 16 (fastMRI's NormUnet)."""

    def __init__(self, chans: int, pools: int, norm: str, groups: int) -> None:
        super().__init__()
        self.unet = Unet(2, 2, chans, pools, norm, groups)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image.real, image.imag], dim=1)  # (N, 2, H, W)
        flat = x.reshape(x.shape[0], 2, -1)
        mean, std = flat.mean(dim=-1)[..., None, None], flat.std(dim=-1)[..., None, None]
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % 16, (-width) % 16
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        x = self.unet(F.pad((x - mean) / std, padding)).float()
        x = x[..., padding[2] : padding[2] + height, padding[0] : padding[0] + width]
        x = x * std + mean
        return torch.complex(x[:, :1], x[:, 1:])


def center_lines(mask: torch.Tensor, num_low_frequencies: torch.Tensor) -> torch.Tensor:
    """(B, W) bool: each sample's fully sampled center columns, ``num_low_frequencies`` wide,
    or where that is 0 twice the shorter sampled run from the center outwards (at least 1),
    exactly as fastMRI's SensitivityModel finds them."""
    width = mask.shape[-1]
    center = width // 2
    sampled = mask.to(torch.int8)
    left = torch.argmin(sampled[:, :center].flip(1), dim=1)  # the first gap (0 if none)
    right = torch.argmin(sampled[:, center:], dim=1)
    found = torch.clamp(2 * torch.minimum(left, right), min=1)
    count = torch.where(num_low_frequencies > 0, num_low_frequencies.to(found), found)
    start = (width - count + 1) // 2
    columns = torch.arange(width, device=mask.device)
    return (columns >= start[:, None]) & (columns < (start + count)[:, None])


class SensitivityNet(nn.Module):
    """Coil sensitivity maps from the fully sampled center of the masked k-space: each coil's
    low-resolution image through a NormUnet (fastMRI's), or with ``chans=0`` as it is (the
    classic estimate, no network: a third less work per step), then normalized to unit
    root-sum-of-squares; or with ``source="espirit"`` (``chans=0``) ESPIRiT's maps of the same
    center columns (``espirit_sensitivities``)."""

    def __init__(
        self, chans: int, pools: int, norm: str, groups: int, source: str = "center_lines"
    ) -> None:
        super().__init__()
        if source not in MAP_SOURCES:
            raise UserError(f"model.sens_maps: expected one of {list(MAP_SOURCES)}, got {source!r}")
        if source == "espirit" and chans > 0:
            raise UserError(
                "model.sens_maps=espirit takes no sensitivity network: set model.sens_chans=0 "
                f"(got {chans})"
            )
        self.source = source
        self.norm_unet = NormUnet(chans, pools, norm, groups) if chans > 0 else None

    def forward(
        self, kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: torch.Tensor
    ) -> torch.Tensor:
        """kspace: (B, C, H, W) complex; mask: (B, W); returns maps (B, C, H, W) complex.

        Raises UserError when a sample has fewer than MIN_CENTER_LINES center columns.
        """
        lines = center_lines(mask, num_low_frequencies)
        fewest = int(lines.sum(dim=-1).min())
        if fewest < MIN_CENTER_LINES:
            raise UserError(
                f"{fewest} fully sampled center column(s), but the sensitivity maps need at "
                f"least {MIN_CENTER_LINES} (a larger mask.center_fractions, or a file whose "
                "mask keeps its center)"
            )
        if self.source == "espirit":
            return espirit_sensitivities(kspace, lines)
        center = lines[:, None, None, :]
        images = ifft2c(kspace * center)
        if self.norm_unet is None:  # sens_chans=0: the low-resolution coil images themselves
            maps = images
        else:
            batch, coils, height, width = images.shape
            maps = self.norm_unet(images.reshape(batch * coils, 1, height, width))
            maps = maps.reshape(batch, coils, height, width)
        return maps / maps.abs().square().sum(dim=1, keepdim=True).sqrt()


@torch.no_grad()
def espirit_sensitivities(kspace: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    """ESPIRiT maps (B, C, H, W) complex, unit norm over coils, of (B, C, H, W) k-space from
    each sample's center columns ``lines`` (B, W) bool: ``coil_maps.estimate_maps`` with the TV
    baseline's default settings, once for each center width in the batch, in full precision.
    Their phase makes the combination of the center's coil images real and positive, as the
    center lines' maps do."""
    maps = torch.empty_like(kspace)
    counts = lines.sum(dim=-1)
    settings = coil_maps.MapSettings(method="espirit")
    with torch.autocast(kspace.device.type, enabled=False):
        for count in counts.unique().tolist():
            chosen = counts == count
            found, _, _ = coil_maps.estimate_maps(kspace[chosen], lines[chosen], settings)
            maps[chosen] = found
    return maps


def combine(coil_kspace: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """S^H F^-1: (B, C, H, W) modulated coil k-space -> (B, 1, H, W) coil-combined image."""
    return (maps.conj() * torch.fft.ifft2(coil_kspace, norm="ortho")).sum(dim=1, keepdim=True)


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    image: torch.Tensor | None,
    iterations: int,
) -> torch.Tensor:
    """``iterations`` conjugate-gradient steps on normal(x) = rhs for (B, 1, H, W) complex
    images, each sample on its own, from ``image`` (None: from 0); ``normal`` is Hermitian
    positive semi-definite. A sample whose squared residual fell below CG_TOLERANCE times its
    first stops (past it, round-off over round-off made steps of 1e6). Differentiable."""

    def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # Re <a, b> per sample
        return (a.conj() * b).real.sum(dim=(1, 2, 3), keepdim=True)

    if image is None:
        image, residual = torch.zeros_like(rhs), rhs
    else:
        residual = rhs - normal(image)
    direction, squared = residual, inner(residual, residual)
    initial = squared
    for _ in range(iterations):
        product = normal(direction)
        curvature = inner(direction, product)
        moving = (squared > CG_TOLERANCE * initial) & (curvature > 0)
        step = torch.where(moving, squared / curvature.clamp(min=1e-30), 0.0)
        image = image + step * direction
        residual = residual - step * product
        new_squared = inner(residual, residual)
        direction = residual + (new_squared / squared.clamp(min=1e-30)) * direction
        squared = new_squared
    return image


def sense_normal(
    maps: torch.Tensor, sampled: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A^H A for A x = M F S x: (B, 1, H, W) -> (B, 1, H, W), with maps (B, C, H, W) and
    sampled (B, 1, 1, W) in the cascades' modulated frame (plain FFTs)."""
    return lambda x: combine(torch.fft.fft2(maps * x, norm="ortho") * sampled, maps)


@torch.no_grad()
def sense_start(
    measured: torch.Tensor, sampled: torch.Tensor, maps: torch.Tensor, iterations: int
) -> torch.Tensor:
    """The cascades' first k-space (B, C, H, W) with ``start="sense"``: F (S x) of the SENSE
    image x, ``iterations`` conjugate-gradient steps on A^H A x = A^H y from x = 0 (A x = M F S x;
    stopping early is its only regularization; a sample that is solved stops, e.g. single-coil,
    in one step), in full precision and without gradient (the image depends on the input alone).

    measured: (B, C, H, W) complex modulated k-space; sampled: (B, 1, 1, W) 1.0 at the sampled
    columns; maps: (B, C, H, W) complex modulated maps (``Cascade``'s frame: plain FFTs).
    """
    measured, maps = measured.to(torch.complex64), maps.detach().to(torch.complex64)
    with torch.autocast(measured.device.type, enabled=False):
        rhs = combine(measured * sampled, maps)
        image = conjugate_gradient(sense_normal(maps, sampled), rhs, None, iterations)
        return torch.fft.fft2(maps * image, norm="ortho")


class Cascade(nn.Module):
    """One unrolled step: soft data consistency (learned weight) plus a U-Net refinement.

    It works in ``fourier.centering_ramps``' modulated k-space (the k-space times its ramp) with
    maps times the conjugate image ramp: there the centered FFTs are plain FFTs, and the mask,
    the soft data consistency and the coil combination are unchanged (elementwise).
    """

    def __init__(self, chans: int, pools: int, norm: str, groups: int) -> None:
        super().__init__()
        self.model = NormUnet(chans, pools, norm, groups)
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self, current: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor
    ) -> torch.Tensor:
        """current, measured: (B, C, H, W) complex modulated k-space; mask: (B, 1, 1, W) 1.0 at
        the sampled columns, else 0.0; maps: (B, C, H, W) complex modulated maps."""
        soft_dc = (current - measured) * (mask * self.dc_weight)  # one pass, not where + scale
        combined = combine(current, maps)
        return current - soft_dc - torch.fft.fft2(self.model(combined) * maps, norm="ortho")


class ProximalCascade(nn.Module):
    """MoDL's unrolled step (Aggarwal et al. 2019): the U-Net's correction z = x - U(x) of the
    coil-combined image x, then the data consistency solved, not stepped:
    x' = argmin ||A x' - y||^2 + w ||x' - z||^2 (A = M F S, w a learned weight), by
    ``iterations`` conjugate-gradient steps on (A^H A + w) x' = A^H y + w z from z, in full
    precision, the gradient through them. The coils then unfold the image in every cascade.
    It takes the data as A^H y, the same in every cascade (``VarNet.forward`` makes it once)."""

    def __init__(self, chans: int, pools: int, norm: str, groups: int, iterations: int) -> None:
        super().__init__()
        self.model = NormUnet(chans, pools, norm, groups)
        self.log_weight = nn.Parameter(torch.tensor(math.log(PROXIMAL_WEIGHT_START)))
        self.iterations = iterations

    def forward(
        self, current: torch.Tensor, adjoint: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor
    ) -> torch.Tensor:
        """As ``Cascade.forward``, (B, C, H, W) modulated k-space in and out, with the measured
        k-space y given as adjoint = A^H y = ``combine(y, maps)`` (B, 1, H, W)."""
        combined = combine(current, maps)
        denoised = combined - self.model(combined)
        with torch.autocast(current.device.type, enabled=False):
            weight = self.log_weight.exp()
            data_normal = sense_normal(maps, mask)
            rhs = adjoint + weight * denoised
            image = conjugate_gradient(
                lambda x: data_normal(x) + weight * x, rhs, denoised, self.iterations
            )
            return torch.fft.fft2(maps * image, norm="ortho")


class VarNet(nn.Module):
    """The end-to-end variational network (module docstring); ``takes = "kspace"``."""

    takes = "kspace"

    def __init__(
        self,
        num_cascades: int = 8,
        chans: int = 12,
        num_pool_layers: int = 4,
        sens_chans: int = 8,
        sens_pool_layers: int = 4,
        norm: str = "group",
        groups: int = 4,
        challenge: str = "multicoil",
        crop_readout: bool = False,
        sens_maps: str = "center_lines",
        start: str = "zero_filled",
        sense_iterations: int = 10,
        data_consistency: str = "gradient",
        dc_iterations: int = 5,
    ) -> None:
        super().__init__()
        for key, value, known in (
            ("start", start, STARTS),
            ("data_consistency", data_consistency, DATA_CONSISTENCIES),
        ):
            if value not in known:
                raise UserError(f"model.{key}: expected one of {list(known)}, got {value!r}")
        for key, value in (
            ("sense_iterations", sense_iterations),
            ("dc_iterations", dc_iterations),
        ):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"model.{key}: expected an integer >= 1, got {value!r}")
        self.crop_readout = crop_readout
        self.proximal = data_consistency == "proximal"
        self.start = start
        self.sense_iterations = sense_iterations
        self.sens_net = (
            SensitivityNet(sens_chans, sens_pool_layers, norm, groups, sens_maps)
            if challenge == "multicoil"
            else None
        )
        self.cascades = nn.ModuleList(
            ProximalCascade(chans, num_pool_layers, norm, groups, dc_iterations)
            if self.proximal
            else Cascade(chans, num_pool_layers, norm, groups)
            for _ in range(num_cascades)
        )

    def compile_parts(self, mode: str | None = None) -> None:
        """``trainer.compile``: compile every U-Net in place, in ``torch.compile``'s ``mode``
        (the FFTs and complex views around them are not compiled: inductor does not lower
        complex operators), each for the shapes it sees (``dynamic=False``: the U-Nets share
        one forward, whose shapes differ between the sensitivity network and the cascades, and
        the dynamic graph inductor then made failed with instance norm: "cannot determine
        truth value of Relational", in scripts/benchmark_gpu.py)."""
        for module in self.modules():
            if isinstance(module, Unet):
                module.compile(mode=mode, dynamic=False)

    def forward(
        self,
        kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: torch.Tensor,
        crop: tuple[int, int],
    ) -> torch.Tensor:
        """The (B, *crop) float32 image in the k-space's units.

        kspace: (B, C, H, W) complex masked k-space (C = 1 single-coil); mask: (B, W) sampled
        columns; num_low_frequencies: (B,) fully sampled center columns (0: find them).
        """
        if self.crop_readout and kspace.shape[-2] > crop[0]:
            kspace = crop_readout(kspace, crop[0])
        if self.sens_net is None:
            maps = torch.ones_like(kspace[:, :1])
        else:
            maps = self.sens_net(kspace, mask, num_low_frequencies)
        sampled = mask.bool().float()[:, None, None, :]
        kspace_ramp, image_ramp = centering_ramps(*kspace.shape[-2:], kspace.device, kspace.dtype)
        measured = kspace * kspace_ramp  # the cascades' modulated k-space (Cascade)
        maps = maps * image_ramp.conj()
        current = measured
        if self.start == "sense":
            current = sense_start(measured, sampled, maps, self.sense_iterations).to(measured)
        data = measured  # the cascades' data: the measured k-space, or A^H y (ProximalCascade)
        if self.proximal:
            with torch.autocast(kspace.device.type, enabled=False):
                data = combine(measured * sampled, maps)
        for cascade in self.cascades:
            current = cascade(current, data, sampled, maps)
        # |ifft2c(k)| = |ifft2(modulated k)|: the image ramp has unit modulus
        image = torch.fft.ifft2(current, norm="ortho").abs().square().sum(dim=1).sqrt()
        top, left = (image.shape[-2] - crop[0]) // 2, (image.shape[-1] - crop[1]) // 2
        return image[:, top : top + crop[0], left : left + crop[1]]


def from_fastmri(state: dict[str, torch.Tensor], pools: int, sens_pools: int) -> dict:
    """fastmri.models.VarNet's ``state_dict`` with this module's names (same tensors)."""
    renamed = {}
    for key, tensor in state.items():
        match = re.match(r"(sens_net\.norm_unet\.unet|cascades\.\d+\.model\.unet)\.(.*)", key)
        if match is None:
            renamed[key] = tensor
            continue
        levels = sens_pools if key.startswith("sens_net") else pools
        renamed[f"{match.group(1)}.{fastmri_unet_key(match.group(2), levels)}"] = tensor
    return renamed


def fastmri_settings(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The settings of the fastmri.models.VarNet whose ``state_dict`` is ``state`` (fastMRI's
    published knee and brain models: 12 cascades, chans 18, pools 4, sens_chans 8, sens_pools 4).

    Raises ValueError when ``state`` is not such a state dict.
    """
    first = "cascades.0.model.unet.down_sample_layers.0.layers.0.weight"
    sens_first = "sens_net.norm_unet.unet.down_sample_layers.0.layers.0.weight"
    if not all(isinstance(state.get(key), torch.Tensor) for key in (first, sens_first)):
        raise ValueError(f"no {first!r} or {sens_first!r} tensor")

    def count(pattern: str) -> int:
        return len({match.group(1) for key in state if (match := re.match(pattern, key))})

    return {
        "num_cascades": count(r"cascades\.(\d+)\.model\.unet\."),
        "chans": state[first].shape[0],
        "num_pool_layers": count(r"cascades\.0\.model\.unet\.down_sample_layers\.(\d+)\."),
        "sens_chans": state[sens_first].shape[0],
        "sens_pool_layers": count(r"sens_net\.norm_unet\.unet\.down_sample_layers\.(\d+)\."),
    }


def fastmri_unet_key(key: str, pools: int) -> str:
    """A fastmri.models.Unet parameter name as ``models.unet.Unet`` names it."""
    last = pools - 1
    rules = [
        (r"^down_sample_layers\.(\d+)\.layers\.", r"down.\1."),
        (r"^conv\.layers\.", f"down.{pools}."),
        (r"^up_transpose_conv\.(\d+)\.layers\.", r"up_transpose.\1."),
        (rf"^up_conv\.{last}\.0\.layers\.", f"up_conv.{last}."),
        (rf"^up_conv\.{last}\.1\.", "head."),
        (r"^up_conv\.(\d+)\.layers\.", r"up_conv.\1."),
    ]
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return key
