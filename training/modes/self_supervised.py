"""Self-supervised step (noisy images only): Neighbor2Neighbor (Huang et al., CVPR 2021).

Why Neighbor2Neighbor rather than Noise2Self's blind-spot masking: every voxel of the sub-images enters the
loss (a blind-spot loss sees only the few masked voxels, so it learns more slowly), and the network runs
unmodified on a real image, so our noise-predicting, noise-level-conditioned residual network needs no
masking at inference and no change to its skip connection (a masked input would leak through
``output = input - noise``). The price: the network trains on sub-images of half the in-plane resolution.

Loss, per sample weighted by 1/σ̂² (σ̂ the blind estimate, clamped at the noise range's minimum and softened
by ``noise.weight_floor``)::

    |f(g1) - g2|²  +  gamma · |f(g1) - g2 - (s1(f(y)) - s2(f(y)))|²

where ``f(y)`` is the network on the full patch without gradient and ``s1``, ``s2`` the same sub-sampling.
As in the authors' code, ``gamma`` ramps linearly from 0 at the first step to its full value at the last:
the regulariser is zero for an identity network, so it grows as the network starts to denoise, and the total
loss need not fall; the reconstruction term (an estimate of the MSE to the clean image plus σ²) does.
Like every such method it assumes noise independent between neighbouring voxels: correlated noise (CT
after filtered back projection, resampled or interpolated images) is partly kept.
"""
from __future__ import annotations

import torch

from ..batches import Batch
from ..optimisation import Optimisation
from ..subsampling import subsample_torch
from .base import Mode, Runtime, per_sample_mean

__all__ = ["SelfSupervisedMode"]


class SelfSupervisedMode(Mode):
    """Neighbor2Neighbor with its regulariser weighted by ``gamma`` (ramped over ``max_steps``)."""

    loss_names = ("loss", "reconstruction", "regulariser")

    def __init__(self, network, optimisation: Optimisation, runtime: Runtime, gamma: float, max_steps: int) -> None:
        super().__init__(network, optimisation, runtime)
        self.gamma = gamma
        self.max_steps = max_steps

    def train_step(self, batch: Batch) -> dict[str, float]:
        rt = self.runtime
        first, second = rt.tensor(batch.extras["first"]), rt.tensor(batch.extras["second"])
        with torch.no_grad(), rt.autocast():
            full = self.denoiser(*self.inputs(batch.noisy, batch.levels)).float()
        target_gap = subsample_torch(full, first) - subsample_torch(full, second)
        g2 = rt.tensor(batch.extras["g2"], channel=True)
        weights = 1.0 / rt.tensor(batch.sigma) ** 2
        with rt.autocast():
            out = self.network(*self.inputs(batch.extras["g1"], batch.extras["g1_levels"]))
        diff = out.float() - g2
        reconstruction = per_sample_mean(diff**2) * weights
        regulariser = per_sample_mean((diff - target_gap) ** 2) * weights
        gamma = self.gamma * min(1.0, self.optimisation.scheduler.last_epoch / self.max_steps)
        loss = (reconstruction + gamma * regulariser).mean()
        self.optimisation.step(loss)
        return {"loss": loss.item(), "reconstruction": reconstruction.mean().item(),
                "regulariser": regulariser.mean().item()}
