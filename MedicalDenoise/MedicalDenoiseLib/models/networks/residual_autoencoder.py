"""Residual convolutional autoencoder that predicts the noise, volumetric or planar."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Downsample, ResidualBlock, Upsample, convolution, conv3
from .config import NetworkConfig

__all__ = ["ResidualAutoencoder"]


class ResidualAutoencoder(nn.Module):
    """Encoder–decoder with skip connections; the output is ``input − predicted noise``.

    The first level works at full resolution (no strided stem), so single-voxel detail reaches the
    output through convolutions that saw it, not only through a skip.

    Call it as ``network(x, sigma)``: ``x`` is the image ``(B, C, D, H, W)``, each spatial size a multiple of
    ``config.size_multiple``; ``sigma`` is the noise SD in normalised units, a number or a ``(B,)`` tensor.
    A network with ``noise_level_input`` builds its conditioning channel from ``sigma`` itself; a blind one
    ignores it. Output: ``(B, C, D, H, W)``, the denoised image.

    A planar network (``config.spatial_dims == 2``) takes the same ``(B, C, D, H, W)`` input, any ``D``, and
    denoises each of its ``D`` slices on its own; it also takes ``(B, C, H, W)``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        feats = config.features
        dims = config.spatial_dims
        in_ch = config.in_channels + (1 if config.noise_level_input else 0)
        self.stem = nn.Sequential(conv3(in_ch, feats[0], dims=dims), nn.LeakyReLU(0.1, inplace=True))
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level, (ch, n_blocks) in enumerate(zip(feats, config.blocks_per_level)):
            if level > 0:
                self.downs.append(Downsample(feats[level - 1], ch, dims))
            self.encoders.append(nn.Sequential(*[ResidualBlock(ch, dims) for _ in range(n_blocks)]))
        self.ups = nn.ModuleList()
        self.fuses = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(len(feats) - 2, -1, -1):
            self.ups.append(Upsample(feats[level + 1], feats[level], dims))
            self.fuses.append(nn.Sequential(conv3(2 * feats[level], feats[level], dims=dims), nn.LeakyReLU(0.1, inplace=True)))
            self.decoders.append(ResidualBlock(feats[level], dims))
        self.head = convolution(dims)(feats[0], config.in_channels, kernel_size=1)

    def conditioned_input(self, x: torch.Tensor, sigma: float | torch.Tensor | None) -> torch.Tensor:
        """``x`` with the noise-level channel appended when the network takes one.

        The channel is built as a constant map of ``sigma`` and then scaled, in that order, so the result
        is bit for bit what the model files were trained and measured with.
        """
        if not self.config.noise_level_input:
            return x
        if sigma is None:
            raise ValueError("this network is conditioned on the noise level: call it as network(x, sigma)")
        if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
            level = sigma.to(x.dtype).view(-1, *[1] * (x.ndim - 1)).expand_as(x[:, :1])
        else:
            level = torch.full_like(x[:, :1], float(sigma))
        return torch.cat([x, level * self.config.noise_level_scale], dim=1)

    def full_resolution_features(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's last feature map, ``(B, features[0], D, H, W)``."""
        h = self.stem(self.conditioned_input(x, sigma))
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                h = self.downs[level - 1](h)
            h = encoder(h)
            skips.append(h)
        for up, fuse, decoder, skip in zip(self.ups, self.fuses, self.decoders, reversed(skips[:-1])):
            h = decoder(fuse(torch.cat([up(h), skip], dim=1)))
        return h

    def predict_noise(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.full_resolution_features(x, sigma))

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        if self.config.spatial_dims == 2 and x.ndim == 5:
            return _slice_by_slice(self, x, sigma)
        return x - self.predict_noise(x, sigma)


def _slice_by_slice(network: nn.Module, x: torch.Tensor, sigma: float | torch.Tensor | None) -> torch.Tensor:
    """A planar network over ``(B, C, D, H, W)``: the ``D`` slices become batch entries, and back."""
    b, c, d, h, w = x.shape
    planes = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
        sigma = sigma.repeat_interleave(d)
    out = network(planes, sigma)
    return out.reshape(b, d, c, h, w).permute(0, 2, 1, 3, 4)
