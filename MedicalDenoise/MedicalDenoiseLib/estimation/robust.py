"""Robust statistics shared by noise estimation, previews and training: outliers and non-finite voxels
must not steer a level or a fill value."""
from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_SD", "mad_sd", "fill_non_finite"]

#: The median absolute deviation of a Gaussian sample times this is its standard deviation.
MAD_TO_SD = 1.4826


def mad_sd(values: np.ndarray) -> float:
    """Standard deviation of ``values`` from their median absolute deviation (robust to outliers)."""
    values = np.asarray(values)
    return float(MAD_TO_SD * np.median(np.abs(values - np.median(values))))


def fill_non_finite(array: np.ndarray) -> tuple[np.ndarray, int, float]:
    """``array`` with NaN/±inf voxels replaced by the median of the finite ones.

    Returns:
        ``(filled, count, fill)``: the filled array (``array`` itself when nothing needed filling, else a
        new array of the same dtype), how many voxels were replaced and the value used (0 when no voxel
        is finite).
    """
    finite = np.isfinite(array)
    count = int(array.size - np.count_nonzero(finite))
    if count == 0:
        return array, 0, 0.0
    fill = float(np.median(array[finite])) if count < array.size else 0.0
    return np.where(finite, array, fill).astype(array.dtype, copy=False), count, fill
