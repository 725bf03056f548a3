"""The centered orthonormal 2-D FFT pair on complex torch tensors (fastmri.fft2c's convention),
for the models and the TV baseline."""

import torch


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2-D FFT over the last two dimensions of a complex tensor."""
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 2-D inverse FFT over the last two dimensions of a complex tensor."""
    k = torch.fft.ifftshift(k, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))
