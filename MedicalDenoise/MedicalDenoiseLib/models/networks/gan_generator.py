"""Generator of the adversarially trained denoiser."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ResidualBlock
from .config import NetworkConfig
from .residual_autoencoder import ResidualAutoencoder

__all__ = ["GANGenerator"]


class GANGenerator(ResidualAutoencoder):
    """The residual autoencoder plus two residual blocks at full resolution before the output.

    Trained with an adversarial term, the extra full-resolution capacity is where fine texture is
    synthesised back instead of the smooth average an L1/L2 loss prefers. Same input and output as
    :class:`ResidualAutoencoder`, so it can be initialised from a trained autoencoder
    (``load_state_dict(..., strict=False)`` leaves only ``refine`` new).
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__(config)
        self.refine = nn.Sequential(*[ResidualBlock(config.features[0], config.spatial_dims) for _ in range(2)])
        # Start the refinement as identity so an initialised generator equals its autoencoder.
        for block in self.refine:
            nn.init.zeros_(block.conv2.weight)
            nn.init.zeros_(block.conv2.bias)

    def predict_noise(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.refine(self.full_resolution_features(x, sigma)))
