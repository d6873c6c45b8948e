"""Training pairs from the noisy scan alone: Recorrupted-to-Recorrupted (Pang et al., CVPR 2021).

With ``y = x + n`` and ``z`` drawn like ``n``, the input ``y + αz`` and the target ``y − z/α`` carry noises
``n + αz`` and ``n − z/α`` that are uncorrelated (their covariance is ``Σ − Σ = 0``), so the expected loss
``‖f(y + αz) − (y − z/α)‖²`` is the loss against the clean image plus a constant: every voxel teaches, and no
clean image is needed. The pairs are cut on the sub-lattices the denoiser runs on, so the network learns what it
will see; ``z`` is drawn on the whole grid and split the same way, keeping the noise's own correlation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..inference.sublattice import Strides, split
from ..estimation.scan_noise import ScanNoise

__all__ = ["RecorruptedPairs", "ALPHA"]

# α = 0.5: inputs carry 1.25× the scan's noise power (close to what the network meets afterwards), targets 5×.
ALPHA = 0.5


@dataclass
class RecorruptedPairs:
    """Draws batches of ``(inputs, targets)`` from a region of a normalised volume.

    Attributes:
        volume: the region ``(D, H, W)``, normalised.
        noise: the scan's noise.
        strides: the sub-lattice strides the denoiser uses.
        patch: patch size on the sub-lattice ``(d, h, w)``; cut smaller where the region is.
        multiple: every patch edge is a multiple of this (the network's size multiple).
        alpha: the recorruption strength.
    """

    volume: np.ndarray
    noise: ScanNoise
    strides: Strides
    patch: tuple[int, int, int]
    multiple: tuple[int, int, int]
    alpha: float = ALPHA

    def grid_patch(self) -> tuple[int, int, int]:
        """The whole-grid size of one patch: a multiple of the strides and of the network's size multiple."""
        sizes = []
        for size, stride, multiple, extent in zip(self.patch, self.strides, self.multiple, self.volume.shape):
            step = stride * multiple
            sizes.append(max(step, min(size * stride, extent) // step * step))
        return tuple(sizes)

    def batch(self, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` pairs, each from a random place and sub-lattice, as ``(count, 1, d, h, w)`` tensors."""
        d, h, w = self.grid_patch()
        inputs, targets = [], []
        lattices = int(np.prod(self.strides))
        for _ in range(count):
            corner = [int(rng.integers(0, extent - size + 1)) for extent, size in zip(self.volume.shape, (d, h, w))]
            y = self.volume[corner[0]:corner[0] + d, corner[1]:corner[1] + h, corner[2]:corner[2] + w]
            z = self.noise.draw((d, h, w), rng)
            which = int(rng.integers(lattices))
            inputs.append(split(y + self.alpha * z, self.strides)[which])
            targets.append(split(y - z / self.alpha, self.strides)[which])
        return torch.from_numpy(np.stack(inputs)[:, None]), torch.from_numpy(np.stack(targets)[:, None])

    def told_level(self, level: float) -> float:
        """The level to tell the network for inputs carrying ``1 + α²`` times the scan's noise power."""
        return float(level * np.sqrt(1.0 + self.alpha**2))
