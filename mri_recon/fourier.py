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


def crop_readout(kspace: torch.Tensor, rows: int) -> torch.Tensor:
    """The k-space (..., rows, W) of the image of ``kspace`` (..., H, W) cropped to its ``rows``
    central rows: a scanner's "remove readout oversampling". Exact for every column, measured or
    not (the readout, rows, is fully sampled), and the field of view then matches the target's."""
    height = kspace.shape[-2]
    top = (height - rows) // 2
    image = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(kspace, dim=-2), dim=-2, norm="ortho"), dim=-2
    )
    image = image[..., top : top + rows, :]
    return torch.fft.fftshift(
        torch.fft.fft(torch.fft.ifftshift(image, dim=-2), dim=-2, norm="ortho"), dim=-2
    )
