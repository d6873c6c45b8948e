"""Networks, one class per file, built from a :class:`NetworkConfig`."""
from __future__ import annotations

from torch import nn

from .config import ARCHITECTURES, NetworkConfig
from .gan_generator import GANGenerator3D
from .patch_discriminator import PatchDiscriminator3D
from .residual_autoencoder import ResidualAutoencoder3D

__all__ = [
    "ARCHITECTURES",
    "NetworkConfig",
    "ResidualAutoencoder3D",
    "GANGenerator3D",
    "PatchDiscriminator3D",
    "build_network",
]

_CLASSES = {
    "residual_autoencoder": ResidualAutoencoder3D,
    "gan_generator": GANGenerator3D,
    "patch_discriminator": PatchDiscriminator3D,
}


def build_network(config: NetworkConfig) -> nn.Module:
    """The untrained network that ``config`` describes."""
    return _CLASSES[config.architecture](config)
