"""Building blocks shared by the networks."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock3D", "Downsample3D", "Upsample3D", "conv3"]


def conv3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


class ResidualBlock3D(nn.Module):
    """conv–act–conv plus identity. No normalisation layer: batch or instance statistics would make the
    output depend on tile contents, so tiled and whole-volume inference would disagree."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3(channels, channels)
        self.conv2 = conv3(channels, channels)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Downsample3D(nn.Module):
    """Strided convolution that halves the grid."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Upsample3D(nn.Module):
    """Transposed convolution that doubles the grid (kernel = stride, so no checkerboard overlap)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))
