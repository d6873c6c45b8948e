"""Supervised steps (synthetic and paired modes): mean squared error against the clean patch, each sample
weighted by 1/σ² of its noise level so that low-noise samples, whose errors are small, count as much as
noisy ones. σ is the level drawn (synthetic) or the measured SD of noisy − clean (paired), clamped at the
noise range's minimum and softened by ``noise.weight_floor`` (see :class:`~training.batches.Batch`), never
the blind estimate: one near-zero estimate once blew a loss up 20,000-fold."""
from __future__ import annotations

from ..batches import Batch
from .base import Mode, per_sample_mean

__all__ = ["SupervisedMode"]


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
        mse = per_sample_mean((out.float() - clean) ** 2)
        loss = (mse * weights).mean()
        self.optimisation.step(loss)
        return {"loss": loss.item(), "mse": mse.mean().item()}
