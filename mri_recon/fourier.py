"""The package's one centered orthonormal FFT pair on complex torch tensors (fastmri.fft2c's
convention), along one dimension or the last two; numpy callers (the demo generator, the
ISMRMRD converter) go through torch.from_numpy."""

import torch


def fftc(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Centered orthonormal FFT of complex ``x`` along ``dim``."""
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.fft(x, dim=dim, norm="ortho"), dim=dim)


def ifftc(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Centered orthonormal inverse FFT of complex ``x`` along ``dim`` (``ifft2c`` is this
    along the rows, then along the columns)."""
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.ifft(x, dim=dim, norm="ortho"), dim=dim)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2-D FFT over the last two dimensions of a complex tensor."""
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2-D inverse FFT over the last two dimensions of a complex tensor."""
    k = torch.fft.ifftshift(k, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))


def crop_readout(kspace: torch.Tensor, rows: int) -> torch.Tensor:
    """The k-space (..., rows, W) of the image of ``kspace`` (..., H, W) cropped to its ``rows``
    central rows: a scanner's "remove readout oversampling". Exact for every column, measured or
    not (the readout, rows, is fully sampled), and the field of view then matches the target's."""
    top = (kspace.shape[-2] - rows) // 2
    image = ifftc(kspace, dim=-2)[..., top : top + rows, :]
    return fftc(image, dim=-2)


def centering_ramps(
    height: int, width: int, device: torch.device, dtype: torch.dtype = torch.complex64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kspace_ramp, image_ramp), each (H, W) of unit modulus in ``dtype`` (the k-space's: a
    complex128 forward keeps float64 accuracy at odd sizes), that turn the centered
    FFT pair into plain FFTs between modulated k-space and modulated images, without rolls:

        ifft2c(k)                = image_ramp * ifft2(kspace_ramp * k)
        kspace_ramp * fft2c(x)   = fft2(image_ramp.conj() * x)

    (an fftshift is a phase ramp on the other side of the transform; for even sizes every
    entry is +1 or -1). Exact for any size.
    """

    def ramps(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        shift, index = size // 2, torch.arange(size, device=device, dtype=torch.float64)
        kspace_turns = torch.remainder(-shift * index, size) / size
        image_turns = torch.remainder(-shift * (index - shift), size) / size
        return tuple(
            torch.polar(torch.ones_like(t), 2 * torch.pi * t) for t in (kspace_turns, image_turns)
        )

    (k_rows, x_rows), (k_cols, x_cols) = ramps(height), ramps(width)
    kspace_ramp = (k_rows[:, None] * k_cols[None, :]).to(dtype)
    image_ramp = (x_rows[:, None] * x_cols[None, :]).to(dtype)
    return kspace_ramp, image_ramp
