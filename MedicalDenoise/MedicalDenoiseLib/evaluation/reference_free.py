"""Measures of a real noisy scan before and after denoising, where no clean reference exists.

:func:`flat_region_noise_sd` and :func:`edge_sharpness` are taken on the same voxels of the input and the
output, chosen on the input by :func:`flat_region_mask` / :func:`strong_edge_mask`; :func:`foreground_mask`
restricts any of them to the body.

They work in-plane (on each axial slice, axes -2 and -1): clinical volumes often have slices several times
thicker than their pixels, and a 3D window or gradient would then mix anatomy across slices into the "noise".
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .metrics import as_mask

__all__ = ["foreground_mask", "flat_region_mask", "flat_region_noise_sd", "local_sd", "strong_edge_mask", "edge_sharpness"]


def _in_plane_sigma(ndim: int, sigma: float) -> tuple[float, ...]:
    """A Gaussian SD that smooths the last two axes only (each axial slice on its own)."""
    return (0.0,) * (ndim - 2) + (float(sigma), float(sigma))


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"{name} must be a non-empty 2D or 3D array, got shape {image.shape}")
    if min(image.shape[-2:]) < 3:
        raise ValueError(f"{name} needs at least 3 x 3 voxels in-plane, got shape {image.shape}")
    return image


def _in_plane_gradient_magnitude(image: np.ndarray, smoothing_sigma: float) -> np.ndarray:
    """Gradient magnitude per axial slice (intensity per voxel): central differences along y and x after an
    in-plane Gaussian of ``smoothing_sigma`` voxels (0: none)."""
    if smoothing_sigma > 0:
        image = ndimage.gaussian_filter(image, _in_plane_sigma(image.ndim, smoothing_sigma))
    gy, gx = np.gradient(image, axis=(-2, -1))
    return np.hypot(gy, gx)


def _lowest_or_highest(values: np.ndarray, region: np.ndarray | None, fraction: float, highest: bool
                       ) -> np.ndarray:
    """The voxels of ``region`` (all when None) whose ``values`` are in the lowest / highest ``fraction``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    inside = np.ones(values.shape, dtype=bool) if region is None else as_mask(region, values.shape)
    threshold = np.quantile(values[inside], 1 - fraction if highest else fraction)
    return inside & (values >= threshold if highest else values <= threshold)


def foreground_mask(normalized: np.ndarray, threshold: float = 0.1, dilation: int = 2,
                    smoothing_sigma: float = 0.0) -> np.ndarray:
    """The body: voxels whose normalised intensity exceeds ``threshold``, dilated by ``dilation`` voxels.

    On images normalised by :class:`~MedicalDenoiseLib.inference.normalization.IntensityNormalizer` (CT: air 0,
    +1000 HU 1; MR/US: 0 to a high percentile) 0.1 separates tissue from air and zeroed background. The
    dilation keeps the body's outline, where a denoiser can blur or invent edges, inside the mask. Scores over
    this mask are not diluted by a large, trivially easy background.

    Args:
        normalized: image in normalised units, shape (z, y, x) or (y, x).
        threshold: intensity above which a voxel is foreground.
        dilation: iterations of a 6-connected (3D) or 4-connected (2D) binary dilation.
        smoothing_sigma: Gaussian SD in voxels applied before thresholding, for noisy inputs (0: none).

    Returns:
        Boolean array of the image's shape (possibly all False: check ``mask.any()`` before using it).
    """
    image = np.asarray(normalized, dtype=np.float64)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"normalized must be a non-empty 2D or 3D array, got shape {image.shape}")
    if int(dilation) != dilation or dilation < 0:
        raise ValueError(f"dilation must be an integer >= 0, got {dilation}")
    if smoothing_sigma > 0:
        image = ndimage.gaussian_filter(image, smoothing_sigma)
    mask = image > threshold
    if dilation and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=int(dilation))
    return mask


def flat_region_mask(image: np.ndarray, foreground: np.ndarray | None = None, fraction: float = 0.25,
                     smoothing_sigma: float = 1.5) -> np.ndarray:
    """Flat voxels of a noisy image: the ``fraction`` of the foreground with the lowest in-plane gradient.

    The gradient is taken after an in-plane Gaussian of ``smoothing_sigma`` voxels, so noise does not decide
    what is flat. Choose the mask on the *input* and use it for the input and every output alike, so all are
    measured on the same voxels.

    Args:
        image: the noisy input, shape (z, y, x) or (y, x), at least 3 x 3 in-plane.
        foreground: optional boolean mask to choose within (default: all voxels).
        fraction: share of the candidate voxels kept, in (0, 1].
        smoothing_sigma: in-plane Gaussian SD in voxels before the gradient.

    Returns:
        Boolean array of the image's shape.
    """
    image = _check_image(image)
    gradient = _in_plane_gradient_magnitude(image, smoothing_sigma)
    return _lowest_or_highest(gradient, foreground, fraction, highest=False)


def flat_region_noise_sd(image: np.ndarray, flat_mask: np.ndarray, window: int = 5) -> float:
    """Noise SD without a reference: the median local SD over flat voxels.

    The local SD is the sample SD (n − 1) in a ``window`` × ``window`` in-plane window around each voxel; its
    median over the flat voxels is robust to the few windows that still catch an edge. For white Gaussian
    noise of SD σ on a flat region it returns about 0.99 σ (the median of a sample SD of 25 values); smooth
    anatomy inside the windows adds a little. A denoiser's output measured on the input's flat voxels gives the
    noise left.

    Args:
        image: shape (z, y, x) or (y, x), at least 3 x 3 in-plane.
        flat_mask: boolean array of the same shape (e.g. from :func:`flat_region_mask` on the input).
        window: odd in-plane window edge in voxels, >= 3.

    Returns:
        The noise SD in the image's units.
    """
    image = _check_image(image)
    mask = as_mask(flat_mask, image.shape)
    if int(window) != window or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3, got {window}")
    size = (1,) * (image.ndim - 2) + (int(window), int(window))
    return float(np.median(local_sd(image, size)[mask]))


def local_sd(image: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Sample SD (n − 1) in a box of ``size`` voxels around each voxel, edges reflected."""
    count = int(np.prod(size))
    mean = ndimage.uniform_filter(image, size=size, mode="reflect")
    mean_square = ndimage.uniform_filter(image * image, size=size, mode="reflect")
    return np.sqrt(np.clip(mean_square - mean * mean, 0.0, None) * (count / (count - 1)))


def strong_edge_mask(image: np.ndarray, foreground: np.ndarray | None = None, fraction: float = 0.02,
                     smoothing_sigma: float = 1.5) -> np.ndarray:
    """The strongest edges of a noisy image: the ``fraction`` of the foreground with the highest in-plane
    gradient after an in-plane Gaussian of ``smoothing_sigma`` voxels (so noise does not pick them).

    Like :func:`flat_region_mask`, choose it on the input and reuse it for every output.

    Returns:
        Boolean array of the image's shape.
    """
    image = _check_image(image)
    gradient = _in_plane_gradient_magnitude(image, smoothing_sigma)
    return _lowest_or_highest(gradient, foreground, fraction, highest=True)


def edge_sharpness(image: np.ndarray, edge_mask: np.ndarray, smoothing_sigma: float = 1.0) -> float:
    """Edge sharpness without a reference: the mean in-plane gradient magnitude over ``edge_mask``.

    Blurring an edge spreads the same step over more voxels and lowers its peak gradient, so the ratio of an
    output's sharpness to the input's, on the input's strongest edges, says how much edge contrast per voxel
    survived (1: kept; below 1: blurred). The light in-plane Gaussian (``smoothing_sigma`` voxels, applied to
    input and output alike) keeps noise from inflating the input's value: without it a noisy input would look
    sharper than a perfectly denoised copy.

    Args:
        image: shape (z, y, x) or (y, x), at least 3 x 3 in-plane.
        edge_mask: boolean array of the same shape (e.g. from :func:`strong_edge_mask` on the input).
        smoothing_sigma: in-plane Gaussian SD in voxels before the central differences (0: none).

    Returns:
        Mean gradient magnitude in the image's units per voxel.
    """
    image = _check_image(image)
    mask = as_mask(edge_mask, image.shape)
    return float(_in_plane_gradient_magnitude(image, smoothing_sigma)[mask].mean())
