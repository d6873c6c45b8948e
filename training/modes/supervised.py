"""Supervised steps (synthetic and paired modes): mean squared error against the clean patch, each sample
weighted by 1/σ² of its noise level so that low-noise samples, whose errors are small, count as much as
noisy ones. σ is the level drawn (synthetic) or the measured SD of noisy − clean (paired), clamped at the
noise range's minimum and softened by ``noise.weight_floor`` (see :class:`~training.batches.Batch`), never
the blind estimate: one near-zero estimate once blew a loss up 20,000-fold."""
from __future__ import annotations

import torch

from ..batches import Batch
from .base import Mode, per_sample_mean

__all__ = ["SupervisedMode", "noisier2noise_prediction"]


def noisier2noise_prediction(output: torch.Tensor, noisier: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
    """What the noisy target is compared with: ``(α² g + z) / (1 + α²)`` per sample, ``g`` itself for α = ∞.

    Args:
        output: the network's ``(B, 1, D, H, W)`` estimate ``g`` of the clean image.
        noisier: its input ``z`` (the noisy target plus added noise).
        alpha2: ``(B,)`` squared ratio of the added noise's SD to the target's own.
    """
    finite = torch.isfinite(alpha2)
    a2 = torch.where(finite, alpha2, torch.ones_like(alpha2)).view(-1, 1, 1, 1, 1)
    mixed = (a2 * output + noisier) / (1 + a2)
    return torch.where(finite.view(-1, 1, 1, 1, 1), mixed, output)


class SupervisedMode(Mode):
    """Weighted MSE of the denoised patch against the clean one."""

    loss_names = ("loss", "mse")

    def train_step(self, batch: Batch) -> dict[str, float]:
        rt = self.runtime
        x, levels = self.inputs(batch.noisy, batch.levels)
        clean = rt.tensor(batch.clean, channel=True)
        weights = 1.0 / rt.tensor(batch.sigma) ** 2
        with rt.autocast():
            out = self.network(x, levels)
        out = out.float()
        if "alpha2" in batch.extras:
            out = noisier2noise_prediction(out, x, rt.tensor(batch.extras["alpha2"]))
        mse = per_sample_mean((out - clean) ** 2)
        loss = (mse * weights).mean()
        self.optimisation.step(loss)
        return {"loss": loss.item(), "mse": mse.mean().item()}
