"""Building blocks shared by the networks, for volumes (``dims=3``) or single slices (``dims=2``)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock", "Downsample", "Upsample", "conv3", "convolution"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def convolution(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return _CONV[dims]


def conv3(in_channels: int, out_channels: int, stride: int = 1, dims: int = 3) -> nn.Module:
    return _CONV[dims](in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


class ResidualBlock(nn.Module):
    """conv–act–conv plus identity. No normalisation layer: batch or instance statistics would make the
    output depend on tile contents, so tiled and whole-volume inference would disagree."""

    def __init__(self, channels: int, dims: int = 3) -> None:
        super().__init__()
        self.conv1 = conv3(channels, channels, dims=dims)
        self.conv2 = conv3(channels, channels, dims=dims)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Downsample(nn.Module):
    """Strided convolution that halves the grid."""

    def __init__(self, in_channels: int, out_channels: int, dims: int = 3) -> None:
        super().__init__()
        self.conv = _CONV[dims](in_channels, out_channels, kernel_size=2, stride=2)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Upsample(nn.Module):
    """Transposed convolution that doubles the grid (kernel = stride, so no checkerboard overlap)."""

    def __init__(self, in_channels: int, out_channels: int, dims: int = 3) -> None:
        super().__init__()
        self.conv = _TRANSPOSED[dims](in_channels, out_channels, kernel_size=2, stride=2)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))
