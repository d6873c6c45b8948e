"""Centred crops: the same region of a clean, a noisy and a denoised volume, for scoring and figures."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["centre_crop"]


def centre_crop(array: np.ndarray, size: int | Sequence[int | None]) -> np.ndarray:
    """The centred block of ``size`` voxels (clipped to the array).

    ``size`` is one edge for every axis (``<= 0``: the whole array) or one value per axis (None or ``<= 0``
    keeps that axis whole).

    Raises:
        ValueError: when a per-axis ``size`` does not have one entry per axis.
    """
    sizes = [size] * array.ndim if isinstance(size, (int, np.integer)) else list(size)
    if len(sizes) != array.ndim:
        raise ValueError(f"crop needs {array.ndim} sizes, got {tuple(sizes)}")

    def centred(extent: int, edge: int | None) -> slice:
        if not edge or edge <= 0:
            return slice(None)
        start = max(0, (extent - edge) // 2)
        return slice(start, start + min(extent, edge))

    return np.ascontiguousarray(array[tuple(centred(n, edge) for n, edge in zip(array.shape, sizes))])
