"""The network a run starts from: random weights, or a shipped model (by registry name or file) to fine-tune.

GAN mode trains a ``gan_generator``; started from a ``residual_autoencoder`` model it takes every weight of
the autoencoder (``load_state_dict(strict=False)``, where only the generator's ``refine.*`` blocks are new
and start as identity), so the first generator equals the autoencoder. A planar run started from a
volumetric model starts from its planar twin (kernels collapsed over depth).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.models.networks.planar import planar_from_volumetric
from MedicalDenoiseLib.models.registry import open_model

from .config import TrainConfig
from .errors import ConfigError

__all__ = ["initial_network"]


def _architecture_for(mode: str, architecture: str) -> str:
    return "gan_generator" if mode == "gan" else architecture


def initial_network(config: TrainConfig) -> tuple[nn.Module, NetworkConfig, dict[str, Any]]:
    """The network to train, its config, and what it was started from (for the model card).

    Raises:
        ModelFileError: ``init`` is neither a shipped model nor a readable model file (from the library).
        ConfigError: ``init`` holds a network that cannot start this mode.
    """
    torch.manual_seed(config.seed)
    if config.init is None:
        network_config = replace(config.network, architecture=_architecture_for(config.mode, config.network.architecture))
        if config.planar:
            network_config = replace(network_config, spatial_dims=2)
        return build_network(network_config), network_config, {}
    loaded = open_model(config.init)
    if config.planar and loaded.card.network.spatial_dims == 3:
        loaded.network = planar_from_volumetric(loaded.network)
        loaded.card.network = loaded.network.config
    elif not config.planar and loaded.card.network.spatial_dims == 2:
        raise ConfigError(f"--init {config.init}: holds a planar network; set planar: true to fine-tune it")
    source = loaded.card.network
    if source.architecture == "patch_discriminator":
        raise ConfigError(f"--init {config.init}: holds a patch discriminator; give a denoiser (residual_autoencoder "
                          "or gan_generator)")
    # A generator fine-tuned in another mode stays a generator; an autoencoder becomes one only for GAN mode.
    network_config = replace(source, architecture=_architecture_for(config.mode, source.architecture))
    weights = loaded.network.state_dict()
    if config.blind and source.noise_level_input:
        # The level channel is the stem's last input channel: keep the image channels' weights only.
        network_config = replace(network_config, noise_level_input=False)
        weights["stem.0.weight"] = weights["stem.0.weight"][:, : source.in_channels].clone()
    network = build_network(network_config)
    missing, unexpected = network.load_state_dict(weights, strict=False)
    new_ok = source.architecture == "residual_autoencoder" and network_config.architecture == "gan_generator"
    bad_missing = [k for k in missing if not (new_ok and k.startswith("refine."))]
    if bad_missing or unexpected:
        raise ConfigError(f"--init {config.init}: weights do not fit a {network_config.architecture} "
                          f"(missing {bad_missing[:3]}, unexpected {list(unexpected)[:3]})")
    info = {
        "init": str(config.init), "init_name": loaded.card.name, "init_sha256": loaded.sha256,
        "init_architecture": source.architecture, "init_noise_range": list(loaded.card.noise_range),
        "init_training_data": list(loaded.card.training_data), "init_modalities": list(loaded.card.modalities),
        "init_blind": bool(config.blind and source.noise_level_input),
        "init_conditioning": loaded.card.conditioning,
    }
    return network, network_config, info
