"""Training modes, one file each: what one optimisation step does with a batch.

=================  =====================================  ============================================
mode               batches                                step
=================  =====================================  ============================================
synthetic          clean volumes + library noise models   :class:`SupervisedMode` (1/σ²-weighted MSE)
paired             ``noisy/`` + ``clean/`` volumes        :class:`SupervisedMode`
self-supervised    noisy volumes, neighbour sub-sampled   :class:`SelfSupervisedMode` (Neighbor2Neighbor)
gan                synthetic or paired (``gan.pairs``)    :class:`GANMode` (L1 + adversarial + features)
=================  =====================================  ============================================
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from MedicalDenoiseLib.models.networks import NetworkConfig, build_network

from ..config import TrainConfig
from ..optimisation import Optimisation
from .base import Mode, Runtime, unwrap
from .gan import GANMode
from .self_supervised import SelfSupervisedMode
from .supervised import SupervisedMode

__all__ = ["Mode", "Runtime", "SupervisedMode", "SelfSupervisedMode", "GANMode", "build_mode", "batch_source", "unwrap"]


def batch_source(config: TrainConfig) -> str:
    """The kind of batches a mode trains on: "synthetic", "paired" or "self-supervised"."""
    if config.mode == "gan":
        return config.gan.pairs
    return config.mode


def build_mode(
    config: TrainConfig,
    network: nn.Module,
    runtime: Runtime,
    wrap: Callable[[nn.Module], nn.Module],
    guard: Callable[[torch.Tensor, str], None],
) -> Mode:
    """The mode ``config.mode`` around ``network`` (already on the device; ``wrap`` adds DDP when distributed)."""
    scale = runtime.amp_dtype == torch.float16
    optimisation = Optimisation(network.parameters(), config.optim.lr, config.optim, config.max_steps, scale, guard)
    wrapped = wrap(network)
    if config.mode == "self-supervised":
        return SelfSupervisedMode(wrapped, optimisation, runtime, config.self_supervised.gamma, config.max_steps)
    if config.mode == "gan":
        torch.manual_seed(config.seed + 1)  # the discriminator's initial weights, the same in every process
        critic_config = NetworkConfig(architecture="patch_discriminator", features=config.gan.discriminator_features,
                                      blocks_per_level=(1,) * len(config.gan.discriminator_features),
                                      noise_level_input=False, in_channels=unwrap(network).config.in_channels)
        critic = build_network(critic_config).to(runtime.device)
        critic_optimisation = Optimisation(critic.parameters(), config.gan.discriminator_lr, config.optim,
                                           config.max_steps, scale, guard)
        return GANMode(wrapped, optimisation, runtime, wrap(critic), critic_optimisation, config.gan)
    return SupervisedMode(wrapped, optimisation, runtime)
