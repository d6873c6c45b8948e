"""3D residual convolutional autoencoder that predicts the noise."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Downsample3D, ResidualBlock3D, Upsample3D, conv3
from .config import NetworkConfig

__all__ = ["ResidualAutoencoder3D"]


class ResidualAutoencoder3D(nn.Module):
    """Encoder–decoder with skip connections; the output is ``input − predicted noise``.

    The first level works at full resolution (no strided stem), so single-voxel detail reaches the
    output through convolutions that saw it, not only through a skip.

    Input: ``(B, 1 [+1 noise-level channel: the noise SD in normalised units], D, H, W)``, each spatial size a multiple of
    ``config.size_multiple``. Output: ``(B, 1, D, H, W)``, the denoised image.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        feats = config.features
        in_ch = config.in_channels + (1 if config.noise_level_input else 0)
        self.stem = nn.Sequential(conv3(in_ch, feats[0]), nn.LeakyReLU(0.1, inplace=True))
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level, (ch, n_blocks) in enumerate(zip(feats, config.blocks_per_level)):
            if level > 0:
                self.downs.append(Downsample3D(feats[level - 1], ch))
            self.encoders.append(nn.Sequential(*[ResidualBlock3D(ch) for _ in range(n_blocks)]))
        self.ups = nn.ModuleList()
        self.fuses = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(feats) - 2, -1, -1):
            self.ups.append(Upsample3D(feats[level + 1], feats[level]))
            self.fuses.append(nn.Sequential(conv3(2 * feats[level], feats[level]), nn.LeakyReLU(0.1, inplace=True)))
            self.decoders.append(ResidualBlock3D(feats[level]))
        self.head = nn.Conv3d(feats[0], config.in_channels, kernel_size=1)

    def _scale_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.noise_level_input:
            return x
        n = self.config.in_channels
        return torch.cat([x[:, :n], x[:, n:] * self.config.noise_level_scale], dim=1)

    def full_resolution_features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's last feature map, ``(B, features[0], D, H, W)``."""
        h = self.stem(self._scale_inputs(x))
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                h = self.downs[level - 1](h)
            h = encoder(h)
            skips.append(h)
        for up, fuse, decoder, skip in zip(self.ups, self.fuses, self.decoders, reversed(skips[:-1])):
            h = decoder(fuse(torch.cat([up(h), skip], dim=1)))
        return h

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.full_resolution_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, : self.config.in_channels]
        return image - self.predict_noise(x)
