"""Neighbour sub-sampling (Neighbor2Neighbor, Huang et al., CVPR 2021) for self-supervised training.

Each 2×2 in-plane cell of a noisy patch gives one voxel to each of two sub-images, ``g1`` and ``g2``, drawn
at random from two edge-adjacent positions of the cell. Their noise is independent while their signal
nearly agrees, so a network trained to map ``g1`` to ``g2`` learns to denoise without a clean target.
Slices are kept as they are: thick-slice volumes have little to spare along z.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["neighbour_pairs", "subsample_numpy", "subsample_torch"]

# Cell positions 0=(0,0), 1=(0,1), 2=(1,0), 3=(1,1); the ordered pairs of edge-adjacent positions.
_ADJACENT = np.array([(0, 1), (0, 2), (1, 0), (1, 3), (2, 0), (2, 3), (3, 1), (3, 2)], dtype=np.int64)


def neighbour_pairs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (0–3) in each cell for ``g1`` and ``g2``.

    Args:
        rng: the random generator.
        shape: ``(B, D, H, W)`` of the full-resolution batch; H and W must be even.

    Returns:
        Two int64 arrays of shape ``(B, D, H / 2, W / 2)``.
    """
    b, d, h, w = shape
    if h % 2 or w % 2:
        raise ValueError(f"in-plane patch size must be even for neighbour sub-sampling, got {h}×{w}")
    choice = rng.integers(len(_ADJACENT), size=(b, d, h // 2, w // 2))
    return _ADJACENT[choice, 0], _ADJACENT[choice, 1]


def subsample_numpy(batch: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``(B, D, H, W)`` → ``(B, D, H/2, W/2)``, taking from each cell the voxel at ``positions``."""
    b, d, h, w = batch.shape
    cells = batch.reshape(b, d, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, d, h // 2, w // 2, 4)
    return np.take_along_axis(cells, positions[..., None], axis=-1)[..., 0]


def subsample_torch(batch: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``(B, C, D, H, W)`` → ``(B, C, D, H/2, W/2)``, as :func:`subsample_numpy` for each channel."""
    b, c, d, h, w = batch.shape
    cells = batch.reshape(b, c, d, h // 2, 2, w // 2, 2).permute(0, 1, 2, 3, 5, 4, 6).reshape(b, c, d, h // 2, w // 2, 4)
    index = positions[:, None, ..., None].expand(b, c, d, h // 2, w // 2, 1)
    return torch.gather(cells, -1, index)[..., 0]
