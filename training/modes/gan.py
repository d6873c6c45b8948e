"""Adversarial step (GAN mode): the generator, started from a trained autoencoder, learns against a 3D patch
discriminator that tells its output from clean patches.

Generator loss: ``lambda_l1 · L1/σ + lambda_adv · adversarial (+ lambda_feature · feature matching)``. The L1
term, per sample divided by the noise level (the L1 counterpart of the 1/σ² weights), keeps the output
faithful; the adversarial term restores the texture an L1/L2 loss averages away; feature matching
compares the discriminator's intermediate activations on clean and denoised patches, a perceptual term that
needs no pretrained network. The discriminator sees real and denoised patches in one batch (one forward
pass, as DistributedDataParallel requires); for the generator's step it runs unwrapped and frozen, so only
the generator's gradients are synchronised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import Batch
from ..config import GANConfig
from ..optimisation import Optimisation
from .base import Mode, Runtime, per_sample_mean, unwrap

__all__ = ["GANMode", "discriminator_features"]


def discriminator_features(discriminator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits and the activation after every hidden level of a PatchDiscriminator3D."""
    features = []
    h = x
    for layer in discriminator.net:
        h = layer(h)
        if isinstance(layer, nn.LeakyReLU):
            features.append(h)
    return h, features


def _discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "lsgan":
        return 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    return F.softplus(-fake).mean()


class GANMode(Mode):
    """Alternating discriminator and generator steps on each batch.

    Args:
        network: the generator (DDP-wrapped under torchrun).
        optimisation: the generator's.
        runtime: device and precision.
        discriminator: the patch discriminator (DDP-wrapped under torchrun).
        discriminator_optimisation: the discriminator's.
        config: loss weights and the adversarial loss.
    """

    loss_names = ("loss", "l1", "adversarial", "feature", "discriminator")

    def __init__(self, network, optimisation: Optimisation, runtime: Runtime, discriminator: nn.Module,
                 discriminator_optimisation: Optimisation, config: GANConfig) -> None:
        super().__init__(network, optimisation, runtime)
        self.discriminator = discriminator
        self.discriminator_optimisation = discriminator_optimisation
        self.config = config

    def train_step(self, batch: Batch) -> dict[str, float]:
        rt, cfg = self.runtime, self.config
        clean = rt.tensor(batch.clean, channel=True)
        sigma = rt.tensor(batch.sigma)
        with rt.autocast():
            fake = self.network(*self.inputs(batch.noisy, batch.levels))
        fake = fake.float()

        with rt.autocast():
            logits = self.discriminator(torch.cat([clean, fake.detach()])).float()
        real_logits, fake_logits = logits.chunk(2)
        d_loss = _discriminator_loss(cfg.adversarial_loss, real_logits, fake_logits)
        self.discriminator_optimisation.step(d_loss, "discriminator loss")

        critic = unwrap(self.discriminator)
        critic.requires_grad_(False)
        try:
            with rt.autocast():
                fake_logits, fake_features = discriminator_features(critic, fake)
                feature = torch.zeros((), device=fake.device)
                if cfg.lambda_feature > 0:
                    with torch.no_grad():
                        _, real_features = discriminator_features(critic, clean)
                    feature = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_features, real_features))
            adversarial = _generator_loss(cfg.adversarial_loss, fake_logits.float())
            l1 = (per_sample_mean((fake - clean).abs()) / sigma).mean()
            loss = cfg.lambda_l1 * l1 + cfg.lambda_adv * adversarial + cfg.lambda_feature * feature
            self.optimisation.step(loss, "generator loss")
        finally:
            critic.requires_grad_(True)
        return {"loss": loss.item(), "l1": l1.item(), "adversarial": adversarial.item(),
                "feature": feature.detach().item(), "discriminator": d_loss.item()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "discriminator": unwrap(self.discriminator).state_dict(),
                "discriminator_optimisation": self.discriminator_optimisation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        self.discriminator_optimisation.load_state_dict(state["discriminator_optimisation"])
