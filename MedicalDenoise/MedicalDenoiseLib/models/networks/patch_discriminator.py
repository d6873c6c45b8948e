"""3D patch discriminator for adversarial training."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .config import NetworkConfig

__all__ = ["PatchDiscriminator3D"]


class PatchDiscriminator3D(nn.Module):
    """A stack of strided convolutions that scores overlapping patches as real or denoised.

    Each output logit sees a receptive field of a few tens of voxels, so the discriminator judges local
    texture rather than global anatomy. Spectral normalisation keeps its gradients well behaved.

    Input: ``(B, 1, D, H, W)``. Output: ``(B, 1, D / 2**(L-1), H / 2**(L-1), W / 2**(L-1))`` logits, with
    ``L = len(config.features)``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch = config.in_channels
        for level, ch in enumerate(config.features):
            stride = 1 if level == 0 else 2
            layers += [spectral_norm(nn.Conv3d(in_ch, ch, 3 if stride == 1 else 4, stride, 1)), nn.LeakyReLU(0.2)]
            in_ch = ch
        layers.append(spectral_norm(nn.Conv3d(in_ch, 1, kernel_size=3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
