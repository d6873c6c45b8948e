"""Image-quality metrics for comparing a denoised image with its clean reference or its noisy input.

All functions take numpy arrays of the same shape, 2D ``(y, x)`` or 3D ``(z, y, x)``, and compute in float64.
Metrics that depend on the intensity scale take ``data_range`` explicitly (the width of the clean image's
range, e.g. 1.0 for an image scaled to [0, 1]) because guessing it from the data makes numbers incomparable
between images and between papers.

Full-reference metrics (need the clean image): :func:`psnr`, :func:`ssim3d`, :func:`edge_preservation`,
:func:`residual_structure_correlation`, :func:`high_frequency_power_ratio`, :func:`error_sd_ratio`. Without a
clean image, :func:`residual_statistics` tells whether what was removed looks like noise (white, zero-mean);
the measures of a real scan before and after denoising are in :mod:`.reference_free`.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = [
    "psnr",
    "ssim3d",
    "residual_statistics",
    "edge_preservation",
    "residual_structure_correlation",
    "high_frequency_power_ratio",
    "error_sd_ratio",
]

# Wang et al. 2004: Gaussian window of sigma 1.5 truncated at 3.5 sigma, i.e. 11 taps.
_SSIM_SIGMA = 1.5
_SSIM_MAX_WINDOW = 11
# Below this many slices a 3D window is mostly reflected padding, so SSIM is taken per 2D slice.
_SSIM_MIN_3D_EXTENT = 7


def _as_pair(reference: np.ndarray, test: np.ndarray, names: tuple[str, str] = ("reference", "test")
             ) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 after checking they are 2D/3D and share one shape."""
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.ndim not in (2, 3) or reference.size == 0:
        raise ValueError(f"{names[0]} must be a non-empty 2D or 3D array, got shape {reference.shape}")
    if test.shape != reference.shape:
        raise ValueError(f"{names[1]} shape must equal {names[0]} shape {reference.shape}, got {test.shape}")
    return reference, test


def as_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask as a boolean array of ``shape``, or None; an empty mask is an error, not a NaN."""
    if mask is None:
        return None
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.shape != shape:
        raise ValueError(f"mask shape must equal the image shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask must select at least one voxel, got an all-False mask")
    return mask


def _check_data_range(data_range: float) -> float:
    data_range = float(data_range)
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range}")
    return data_range


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two flat samples; NaN when either is constant (correlation undefined)."""
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if denominator == 0.0:
        return float("nan")
    return float(np.dot(x, y) / denominator)


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio, ``10 log10(data_range² / MSE)``.

    Args:
        reference: clean image, shape (z, y, x) or (y, x).
        test: image to score, same shape.
        data_range: width of the reference's intensity range (the "peak").
        mask: optional boolean array of the same shape; the MSE is taken over its True voxels only.

    Returns:
        PSNR in dB; ``inf`` when the images are identical (over the mask).
    """
    reference, test = _as_pair(reference, test)
    data_range = _check_data_range(data_range)
    mask = as_mask(mask, reference.shape)
    squared_error = (reference - test) ** 2
    mse = float(squared_error[mask].mean() if mask is not None else squared_error.mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _largest_odd_window(extent: int) -> int:
    window = min(extent, _SSIM_MAX_WINDOW)
    return window if window % 2 == 1 else window - 1


def _ssim_map(reference: np.ndarray, test: np.ndarray, data_range: float
              ) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Full SSIM map and the region away from the borders that the plain mean is taken over.

    Returns:
        ``(ssim_map, valid)``: the map has the input's shape; ``ssim_map[valid]`` drops the window radius
        at every border, as scikit-image does for its mean.
    """
    shape = reference.shape
    if reference.ndim == 3 and min(shape) < _SSIM_MIN_3D_EXTENT:
        # A thin slab: average 2D SSIM over slices along the thinnest axis (a 1 x 5 x 7 volume is one image).
        axis = int(np.argmin(shape))
        maps = []
        valid_2d: tuple[slice, ...] = ()
        for index in range(shape[axis]):
            slice_map, valid_2d = _ssim_map(np.take(reference, index, axis=axis),
                                            np.take(test, index, axis=axis), data_range)
            maps.append(slice_map)
        valid = valid_2d[:axis] + (slice(None),) + valid_2d[axis:]
        return np.stack(maps, axis=axis), valid
    # A smaller odd window only narrows the border crop: the Gaussian itself keeps sigma 1.5 (reflect mode),
    # so small images get the same weighting, just fewer discarded border voxels.
    window = _largest_odd_window(min(shape))
    from skimage.metrics import structural_similarity  # imported on use: denoising never needs it

    _, ssim_map = structural_similarity(
        reference, test, data_range=data_range, gaussian_weights=True, sigma=_SSIM_SIGMA,
        use_sample_covariance=False, win_size=window, full=True,
    )
    pad = (window - 1) // 2
    return ssim_map, tuple(slice(pad, extent - pad) for extent in shape)


def ssim3d(reference: np.ndarray, test: np.ndarray, data_range: float, mask: np.ndarray | None = None
           ) -> float:
    """Structural similarity computed with a 3D window (Wang et al. 2004 settings).

    Gaussian weights with sigma 1.5 (11 taps), population covariance, K1 = 0.01, K2 = 0.03, via scikit-image.
    A volume with fewer than 7 voxels along an axis is scored as the mean 2D SSIM of its slices along that
    axis; an image smaller than 11 voxels along an axis uses a smaller odd window for the border crop, so
    tiny inputs (even 1 x 5 x 7) give a number instead of an error.

    Args:
        reference: clean image, shape (z, y, x) or (y, x).
        test: image to score, same shape.
        data_range: width of the reference's intensity range.
        mask: optional boolean array of the same shape. Without it the SSIM map is averaged away from the
            borders (as scikit-image does); with it, the full map is averaged over the mask's voxels.

    Returns:
        Mean SSIM, 1.0 for identical images.
    """
    reference, test = _as_pair(reference, test)
    data_range = _check_data_range(data_range)
    mask = as_mask(mask, reference.shape)
    ssim_map, valid = _ssim_map(reference, test, data_range)
    if mask is not None:
        return float(ssim_map[mask].mean())
    return float(ssim_map[valid].mean())


def residual_statistics(noisy: np.ndarray, denoised: np.ndarray, mask: np.ndarray | None = None
                        ) -> dict[str, float]:
    """Summary of the removed part, ``noisy - denoised``, which should look like white noise.

    Needs no clean image, so it also applies to real scans. A mean far from 0 means the denoiser shifted
    intensities; a lag-1 autocorrelation well above 0 means it removed spatially correlated content
    (texture or anatomy), not only white noise.

    Args:
        noisy: input image, shape (z, y, x) or (y, x).
        denoised: output image, same shape.
        mask: optional boolean array; statistics use its voxels (and neighbour pairs inside it) only.

    Returns:
        ``{"mean": ..., "std": ..., "lag1_autocorrelation": ...}``; the autocorrelation is the mean over
        axes of the normalised lag-1 autocovariance (≈ 0 for white noise), NaN for a constant residual.
    """
    noisy, denoised = _as_pair(noisy, denoised, ("noisy", "denoised"))
    mask = as_mask(mask, noisy.shape)
    residual = noisy - denoised
    inside = mask if mask is not None else np.ones(residual.shape, dtype=bool)
    values = residual[inside]
    mean = float(values.mean())
    variance = float(values.var())
    per_axis = []
    for axis in range(residual.ndim):
        if residual.shape[axis] < 2:
            continue
        head = [slice(None)] * residual.ndim
        tail = [slice(None)] * residual.ndim
        head[axis], tail[axis] = slice(0, -1), slice(1, None)
        pairs = inside[tuple(head)] & inside[tuple(tail)]
        if not pairs.any():
            continue
        covariance = np.mean((residual[tuple(head)][pairs] - mean) * (residual[tuple(tail)][pairs] - mean))
        per_axis.append(covariance / variance if variance > 0 else float("nan"))
    autocorrelation = float(np.mean(per_axis)) if per_axis else float("nan")
    return {"mean": mean, "std": math.sqrt(variance), "lag1_autocorrelation": autocorrelation}


def edge_preservation(reference: np.ndarray, test: np.ndarray) -> float:
    """How well edges survive: correlation of gradient magnitudes on the reference's edges.

    Gradient magnitudes come from ``scipy.ndimage.gaussian_gradient_magnitude`` with sigma 1 voxel; the
    correlation is taken over the voxels where the reference's gradient is in its top 10 %, so flat regions
    (where any denoiser does well) do not dilute the score.

    Args:
        reference: clean image, shape (z, y, x) or (y, x).
        test: image to score, same shape.

    Returns:
        Pearson correlation in [-1, 1]; 1.0 when edges are perfectly kept, NaN for a flat reference.
    """
    reference, test = _as_pair(reference, test)
    gradient_reference = ndimage.gaussian_gradient_magnitude(reference, sigma=1.0)
    gradient_test = ndimage.gaussian_gradient_magnitude(test, sigma=1.0)
    edges = gradient_reference >= np.percentile(gradient_reference, 90)
    return _pearson(gradient_reference[edges], gradient_test[edges])


def residual_structure_correlation(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray) -> float:
    """Correlation between what the denoiser removed and the clean image's fine detail.

    The detail is ``clean - gaussian_filter(clean, 2)`` (a band-pass of edges and small structures). A
    denoiser that removes only noise leaves a residual uncorrelated with it (≈ 0); one that erases anatomy
    gives a clearly positive value.

    Args:
        clean: clean image, shape (z, y, x) or (y, x).
        noisy: the noisy input, same shape.
        denoised: the output, same shape.

    Returns:
        Pearson correlation in [-1, 1]; NaN when the residual or the detail is constant.
    """
    clean, noisy = _as_pair(clean, noisy, ("clean", "noisy"))
    _, denoised = _as_pair(clean, denoised, ("clean", "denoised"))
    detail = clean - ndimage.gaussian_filter(clean, sigma=2.0)
    return _pearson((noisy - denoised).ravel(), detail.ravel())


def _high_frequency_power(array: np.ndarray) -> float:
    """FFT power at radial frequencies above half the Nyquist frequency (0.25 cycles per voxel)."""
    spectrum = np.abs(np.fft.fftn(array)) ** 2
    grids = np.meshgrid(*[np.fft.fftfreq(extent) for extent in array.shape], indexing="ij", sparse=True)
    radius = np.sqrt(sum(grid**2 for grid in grids))
    return float(spectrum[radius > 0.25].sum())


def high_frequency_power_ratio(reference: np.ndarray, test: np.ndarray) -> float:
    """Fine-texture power of ``test`` relative to ``reference``.

    Power is summed over FFT frequencies whose radius exceeds half the Nyquist frequency. Over-smoothing
    gives a ratio below 1 (the "plastic" look), residual noise or ringing above 1; judge it against the clean
    image, not the noisy one.

    Args:
        reference: image whose texture is the target (usually the clean one), shape (z, y, x) or (y, x).
        test: image to score, same shape.

    Returns:
        The power ratio, 1.0 for the same texture; ``inf`` (or NaN if both are 0) when the reference has no
        high-frequency power.
    """
    reference, test = _as_pair(reference, test)
    power_reference = _high_frequency_power(reference)
    power_test = _high_frequency_power(test)
    if power_reference == 0.0:
        return float("nan") if power_test == 0.0 else math.inf
    return power_test / power_reference


def error_sd_ratio(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray, mask: np.ndarray | None = None
                   ) -> float:
    """How much of the input's error the output still has: SD(denoised − clean) / SD(noisy − clean).

    1 for the input itself, 0 for a perfect output. Unlike PSNR it ignores a constant offset and is relative to
    the noise actually present. On the clean image's flat voxels (e.g. :func:`.reference_free.flat_region_mask`
    of the clean image) it separates denoisers that smooth (well below 1) from those that replace the noise with
    texture of their own, which the clean image does not have there (near or above 1).

    Args:
        clean: clean image, shape (z, y, x) or (y, x).
        noisy: the noisy input, same shape.
        denoised: the output, same shape.
        mask: optional boolean array of the same shape; the voxels both SDs are taken over (default: all).

    Returns:
        The ratio, >= 0; NaN when the input's error is constant over the voxels (no noise to compare with).
    """
    clean, noisy = _as_pair(clean, noisy, ("clean", "noisy"))
    _, denoised = _as_pair(clean, denoised, ("clean", "denoised"))
    mask = as_mask(mask, clean.shape)
    error_in, error_out = noisy - clean, denoised - clean
    if mask is not None:
        error_in, error_out = error_in[mask], error_out[mask]
    sd_in = float(np.std(error_in))
    return float(np.std(error_out)) / sd_in if sd_in > 0 else float("nan")
