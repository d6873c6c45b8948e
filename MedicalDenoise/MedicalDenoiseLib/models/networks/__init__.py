"""Networks, one class per file, built from a :class:`NetworkConfig`."""
from __future__ import annotations

from torch import nn

from .config import ARCHITECTURES, NetworkConfig
from .gan_generator import GANGenerator
from .patch_discriminator import PatchDiscriminator3D
from .residual_autoencoder import ResidualAutoencoder

__all__ = [
    "ARCHITECTURES",
    "NetworkConfig",
    "ResidualAutoencoder",
    "GANGenerator",
    "PatchDiscriminator3D",
    "build_network",
]

_CLASSES = {
    "residual_autoencoder": ResidualAutoencoder,
    "gan_generator": GANGenerator,
    "patch_discriminator": PatchDiscriminator3D,
}


def build_network(config: NetworkConfig) -> nn.Module:
    """The untrained network that ``config`` describes."""
    return _CLASSES[config.architecture](config)
