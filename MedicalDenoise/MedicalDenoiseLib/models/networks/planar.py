"""A planar network started from a volumetric one: its response to an image that does not vary in depth.

A 2D image run through a volumetric network is one slice padded to the network's depth multiple: four
slices' work for one. A planar twin does one slice's work. Its starting weights are the volumetric
kernels summed over depth, which is exactly the volumetric network on a depth-constant input for every
convolution and down-sampling; the transposed convolutions give alternate slices different kernels, and
the twin takes their mean. Not exact, so the twin is fine-tuned on slices before it ships
(``training/configs/recipes/*-planar.yaml``).
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from . import build_network
from .config import NetworkConfig

__all__ = ["planar_from_volumetric"]


def planar_from_volumetric(network: nn.Module) -> nn.Module:
    """The planar twin of ``network`` (a volumetric autoencoder or generator).

    Raises:
        ValueError: for a network that is already planar or has no config.
    """
    config: NetworkConfig | None = getattr(network, "config", None)
    if config is None or config.spatial_dims != 3:
        raise ValueError("planar_from_volumetric needs a volumetric (spatial_dims 3) network")
    twin = build_network(replace(config, spatial_dims=2))
    volumetric = dict(network.named_modules())
    for name, module in twin.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        source = volumetric[name]
        kernel = source.weight.detach()
        # Transposed: each output slice uses one depth tap, so the depth-constant mean; else their sum.
        collapsed = kernel.mean(dim=2) if isinstance(module, nn.ConvTranspose2d) else kernel.sum(dim=2)
        module.weight.data.copy_(collapsed)
        if module.bias is not None:
            module.bias.data.copy_(source.bias.detach())
    return twin
