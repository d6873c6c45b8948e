"""Blind estimation of the noise level from the image itself.

The estimator filters each slice with the separable second difference ``[1, -2, 1] ⊗ [1, -2, 1]``, which
cancels intensity ramps and keeps mostly noise, and takes a robust (median absolute deviation) standard
deviation of the result. It works in-plane so thick-slice volumes and 2D images are handled alike. Flat
regions whose neighbourhood is exactly constant (zeroed MR background, CT padding) are left out, because
they hold no noise to measure. For spatially correlated noise (CT) it reports the high-frequency part of
the noise; the shipped models are trained on this same estimate, so blind operation stays consistent.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["estimate_noise_sigma"]

_KERNEL = np.array([1.0, -2.0, 1.0])
_KERNEL_NORM = 6.0  # sqrt(sum(outer(k, k) ** 2)) = sqrt(36): keeps white noise's SD unchanged.
_MAD_TO_SD = 1.4826


def estimate_noise_sigma(array: np.ndarray, max_slices: int = 48) -> float:
    """Standard deviation of the noise, in the array's units.

    Args:
        array: a 2D ``(H, W)`` or 3D ``(D, H, W)`` image; non-finite voxels are ignored.
        max_slices: at most this many evenly spaced slices are used (the estimate converges long before).

    Returns:
        The estimated SD; 0.0 for a constant image or one too small to measure (under 3×3 in-plane).
    """
    volume = np.asarray(array)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise ValueError(f"array must be 2D or 3D, got {volume.ndim}D")
    if volume.shape[1] < 3 or volume.shape[2] < 3:
        return 0.0
    step = max(1, volume.shape[0] // max_slices)
    volume = volume[::step].astype(np.float64)  # subsample first: a float64 copy of a whole CT is large
    finite = np.isfinite(volume)
    if not finite.all():
        volume = np.where(finite, volume, np.median(volume[finite]) if finite.any() else 0.0)
    detail = ndimage.correlate1d(volume, _KERNEL, axis=1, mode="reflect")
    detail = ndimage.correlate1d(detail, _KERNEL, axis=2, mode="reflect") / _KERNEL_NORM
    # A voxel counts only if its 3×3 in-plane neighbourhood varies and is finite.
    local_range = ndimage.maximum_filter(volume, size=(1, 3, 3)) - ndimage.minimum_filter(volume, size=(1, 3, 3))
    valid = (local_range > 0) & ndimage.minimum_filter(finite, size=(1, 3, 3))
    valid[:, [0, -1], :] = False
    valid[:, :, [0, -1]] = False
    values = detail[valid]
    if values.size < 16:
        return 0.0
    return float(_MAD_TO_SD * np.median(np.abs(values - np.median(values))))
