"""U-Net for zero-filled -> fully sampled magnitude images, with a choice of normalization layer.

The lecture's recommendation is GroupNorm (32 groups): it normalizes within one sample, so it
behaves the same at any batch size and in training and evaluation. ``norm`` also accepts
``batch``, ``instance``, ``layer`` and ``none`` for the ablations.
"""

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("group", "batch", "instance", "layer", "none")


def group_count(channels: int, groups: int) -> int:
    """GroupNorm groups for a layer: ``groups``, reduced to ``channels`` in narrower layers.

    Raises ValueError when the result does not divide ``channels``.
    """
    count = min(groups, channels)
    if channels % count:
        raise ValueError(f"model.groups={groups} does not divide a layer of {channels} channels")
    return count


def make_norm(norm: str, channels: int, groups: int) -> nn.Module:
    """A normalization layer for (N, channels, H, W) activations."""
    if norm == "group":
        return nn.GroupNorm(group_count(channels, groups), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"model.norm: expected one of {NORMS}, got {norm!r}")


class ConvBlock(nn.Sequential):
    """Two (3x3 conv -> norm -> LeakyReLU -> dropout) layers: (N, in, H, W) -> (N, out, H, W)."""

    def __init__(self, in_chans: int, out_chans: int, norm: str, groups: int, drop: float) -> None:
        bias = norm == "none"
        layers: list[nn.Module] = []
        for channels_in in (in_chans, out_chans):
            layers += [
                nn.Conv2d(channels_in, out_chans, kernel_size=3, padding=1, bias=bias),
                make_norm(norm, out_chans, groups),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout2d(drop),
            ]
        super().__init__(*layers)


class UpBlock(nn.Sequential):
    """2x transposed conv -> norm -> LeakyReLU: (N, in, H, W) -> (N, out, 2H, 2W)."""

    def __init__(self, in_chans: int, out_chans: int, norm: str, groups: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=norm == "none"),
            make_norm(norm, out_chans, groups),
            nn.LeakyReLU(0.2, inplace=True),
        )


class Unet(nn.Module):
    """Encoder-decoder with skip connections (Ronneberger et al.; fastMRI's layout).

    Input (N, in_chans, H, W), output (N, out_chans, H, W), any H and W: the input is padded to a
    multiple of 2**num_pool_layers and the output cropped back. An image model: ``takes`` the
    normalized zero-filled image (``models.interface``). ``residual``: the output is the input
    plus the network's (so the network learns the correction to the zero-filled image; no
    parameters added, the same weights as the plain U-Net's).
    """

    takes = "image"

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        chans: int = 32,
        num_pool_layers: int = 4,
        norm: str = "group",
        groups: int = 32,
        drop_prob: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and in_chans != out_chans:
            raise ValueError(
                f"model.residual needs in_chans == out_chans, got {in_chans}, {out_chans}"
            )
        self.residual = residual
        if norm not in NORMS:
            raise ValueError(f"model.norm: expected one of {NORMS}, got {norm!r}")
        self.num_pool_layers = num_pool_layers
        widths = [chans * 2**level for level in range(num_pool_layers + 1)]
        self.down = nn.ModuleList([ConvBlock(in_chans, widths[0], norm, groups, drop_prob)])
        self.down.extend(
            ConvBlock(widths[i], widths[i + 1], norm, groups, drop_prob)
            for i in range(num_pool_layers)
        )
        self.up_transpose = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], norm, groups)
            for i in reversed(range(num_pool_layers))
        )
        self.up_conv = nn.ModuleList(
            ConvBlock(2 * widths[i], widths[i], norm, groups, drop_prob)
            for i in reversed(range(num_pool_layers))
        )
        self.head = nn.Conv2d(widths[0], out_chans, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        multiple = 2**self.num_pool_layers
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        output = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else image

        skips = []
        for level, block in enumerate(self.down):
            output = block(output)
            if level < self.num_pool_layers:
                skips.append(output)
                output = F.avg_pool2d(output, kernel_size=2)
        for transpose, conv in zip(self.up_transpose, self.up_conv, strict=True):
            output = conv(torch.cat([transpose(output), skips.pop()], dim=1))
        output = self.head(output)[..., :height, :width]
        return image + output if self.residual else output


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
