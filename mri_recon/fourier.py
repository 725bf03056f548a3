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
