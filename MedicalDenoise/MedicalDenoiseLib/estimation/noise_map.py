"""Where the noise is stronger: a per-voxel noise SD for noise that varies smoothly in space.

Root-sum-of-squares coil combination leaves MR noisier far from the coils, and CT is noisier behind dense
anatomy; one SD then describes neither the quiet nor the noisy part. The flat patches of the blind estimate
(:mod:`~MedicalDenoiseLib.estimation.noise_estimation`) are spread over the image, so the log of their noise
variance, fitted by a low-order polynomial of position (quadratic in-plane, quadratic through the slices
when there are enough), gives the shape of the noise. A polynomial follows coil and attenuation profiles,
which vary over the whole field of view, and not the patch-to-patch scatter of single variances. The level
is set the way the blind estimate sets it, on the variances divided by that shape, so that a stationary
image gets its usual SD everywhere.

The map describes the object; in air and outside the field of view it is an extrapolation.
"""
from __future__ import annotations

import numpy as np

from .flat_patches import prepare_slices
from .noise_estimation import MAX_SLICES, as_volume, estimate_fine_scale_sigma, measure_flat_noise, pure_noise_level

__all__ = ["estimate_noise_map"]

_PATCHES_PER_TERM = 8  # fewer flat patches than this per polynomial term: a constant map
_ROBUST_ROUNDS = 3  # reweighted fits: patches with structure left in them stop pulling the surface
_HUBER = 1.5  # residuals beyond this many robust SDs of log-variance are down-weighted


def _design(z: np.ndarray, y: np.ndarray, x: np.ndarray, shape: tuple[int, int, int], through: bool) -> list:
    """Polynomial terms of position scaled to [−1, 1]: 1, x, y, x², xy, y² (and z, z² through slices)."""
    depth, height, width = shape
    u = 2.0 * x / max(width - 1, 1) - 1.0
    v = 2.0 * y / max(height - 1, 1) - 1.0
    terms = [np.ones_like(u * v), u, v, u * u, u * v, v * v]
    if through:
        w = 2.0 * z / max(depth - 1, 1) - 1.0
        terms += [w, w * w]
    return terms


def _robust_fit(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Huber-weighted least squares (iteratively reweighted): coefficients of ``design @ c ≈ target``."""
    weight = np.ones_like(target)
    coefficients = np.zeros(design.shape[1])
    for _ in range(_ROBUST_ROUNDS):
        root = np.sqrt(weight)
        coefficients = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)[0]
        residual = target - design @ coefficients
        scale = 1.4826 * np.median(np.abs(residual - np.median(residual))) + 1e-12
        weight = np.minimum(1.0, _HUBER * scale / np.maximum(np.abs(residual), 1e-300))
    return coefficients


def estimate_noise_map(array: np.ndarray, max_slices: int = MAX_SLICES) -> np.ndarray:
    """Per-voxel SD of the noise (correlated part included), smooth in space, in the array's units.

    Args:
        array: a 2D ``(H, W)`` or 3D ``(D, H, W)`` image; non-finite voxels are ignored.
        max_slices: at most this many evenly spaced slices are measured.

    Returns:
        float32 array of the input's shape. Constant where too few flat patches show how the noise varies
        (then it holds the fine-scale estimate when no flat patch is found at all); 0 for a constant image.
    """
    volume = as_volume(array)
    shape = volume.shape
    if shape[1] < 3 or shape[2] < 3:
        return np.zeros(np.shape(array), np.float32)
    prepared = prepare_slices(volume, max_slices)
    noise = measure_flat_noise(prepared)
    if noise is None:
        return np.full(np.shape(array), estimate_fine_scale_sigma(array, max_slices), np.float32)
    tissue_sd = noise.tissue_sd
    # Where an MR background shows the tissue's patches to hold anatomy, their level is scaled to it.
    scale = noise.sd / tissue_sd if tissue_sd > 0 else 1.0
    through = len(np.unique(noise.flat.centres[:, 0])) >= 3
    z, y, x = noise.flat.centres.T
    design = np.stack(_design(z, y, x, shape, through), axis=1)
    if noise.variance.size < _PATCHES_PER_TERM * design.shape[1] or not np.all(noise.variance > 0):
        return np.full(np.shape(array), scale * tissue_sd, np.float32)
    coefficients = _robust_fit(design, np.log(noise.variance))
    shape_at_patches = np.exp(design @ coefficients)
    level = pure_noise_level(noise.variance / shape_at_patches, noise.dof) / (1.0 - noise.correlation.fit_loss)
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    log_shape = sum(float(c) * term for c, term in zip(coefficients, _design(*grid, shape, through)))
    sd_map = (scale * np.sqrt(level)) * np.exp(0.5 * np.broadcast_to(log_shape, shape))
    return sd_map.astype(np.float32).reshape(np.shape(array))
