"""Blind estimation of the noise from the image itself: its full standard deviation and how it correlates.

Real scanners rarely produce white noise: filtered back projection gives CT a mid-frequency texture,
zero-filled MR k-space and ultrasound speckle give grain several voxels wide. A high-pass filter sees only
the finest part of such noise, so :func:`estimate_noise` measures the noise where the image is flat instead:

1. Small in-plane patches are found whose smoothed image shows no structure
   (:mod:`~MedicalDenoiseLib.inference.flat_patches`); a quadratic fit removes ramps and shading.
2. The residuals' autocovariance gives the noise correlation and the share of the noise the fit removed
   (:mod:`~MedicalDenoiseLib.inference.noise_correlation`), which is added back.
3. The level is a low quantile of the patch variances (patches with structure left in them only add
   variance), corrected for where that quantile lies for pure noise of the measured correlation, and, on MR
   magnitude images, for the Rician bias of dark patches (:mod:`~MedicalDenoiseLib.inference.rician`).

:func:`estimate_noise_sigma` returns the full SD alone. :func:`estimate_fine_scale_sigma` keeps the
high-pass estimate that the shipped models were trained to be conditioned on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, stats

from .flat_patches import FlatPatches, PreparedSlices, choose_flat_patches, measure_patches, prepare_slices
from .noise_correlation import measure_correlation, through_plane_correlation
from .rician import rician_variance_factor
from .robust import mad_sd

__all__ = ["NoiseEstimate", "estimate_noise", "estimate_noise_sigma", "estimate_fine_scale_sigma"]

MAX_SLICES = 48  # evenly spaced slices measured; the estimate converges long before
# Quantile of the patch variances used as the level: low enough that patches with some texture left in them
# (which only add variance) do not move it, high enough to be stable.
_QUANTILE = 0.4


@dataclass(frozen=True)
class NoiseEstimate:
    """What a blind estimate found, in the image's units.

    Attributes:
        sigma: standard deviation of the noise (of noisy − clean), correlated part included.
        fine_scale_sigma: the high-pass (finest-scale) estimate; equals ``sigma`` for white noise and
            falls below it as the noise grain widens.
        correlation: lag-1 correlation of the noise between in-plane neighbours, ``(y, x)``.
        correlation_z: lag-1 correlation between neighbouring slices (of the residuals after the in-plane
            fit); None for a 2D image.
        kernel: in-plane noise autocorrelation over lags ``[−L, L]²`` (1 at the centre), for a noise power
            spectrum or a correlated-noise simulation; None when the image was too small to measure it.
        patches: how many flat patches the level rests on (0 when it fell back to the fine-scale estimate).
        magnitude: whether the image was treated as an MR magnitude image (no negative values).
    """

    sigma: float
    fine_scale_sigma: float
    correlation: tuple[float, float] = (0.0, 0.0)
    correlation_z: float | None = None
    kernel: np.ndarray | None = field(default=None, compare=False)
    patches: int = 0
    magnitude: bool = False

    @property
    def correlated(self) -> bool:
        """Whether neighbouring voxels share an appreciable part of the noise (lag-1 above 0.2 in-plane)."""
        return max(self.correlation) > 0.2


def _as_volume(array: np.ndarray) -> np.ndarray:
    volume = np.asarray(array)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise ValueError(f"array must be 2D or 3D, got {volume.ndim}D")
    return volume


def _fine_scale_sigma(prepared: PreparedSlices) -> float:
    """Robust SD of the fine-scale detail over voxels whose finite 3×3 neighbourhood varies."""
    valid = (prepared.local_range > 0) & ndimage.minimum_filter(prepared.finite, size=(1, 3, 3))
    valid[:, [0, -1], :] = False
    valid[:, :, [0, -1]] = False
    values = prepared.detail[valid]
    return mad_sd(values) if values.size >= 16 else 0.0


def estimate_fine_scale_sigma(array: np.ndarray, max_slices: int = MAX_SLICES) -> float:
    """The finest-scale part of the noise SD: a robust SD of the ``[1, −2, 1] ⊗ [1, −2, 1]`` filtered slices.

    Right for white noise and blind to its correlated part. The shipped models were trained with this number
    as their level input, so they need it to behave as validated.

    Args:
        array: a 2D ``(H, W)`` or 3D ``(D, H, W)`` image; non-finite voxels are ignored.
        max_slices: at most this many evenly spaced slices are used.

    Returns:
        The SD; 0.0 for a constant image or one too small to measure (under 3×3 in-plane).
    """
    volume = _as_volume(array)
    if volume.shape[1] < 3 or volume.shape[2] < 3:
        return 0.0
    return _fine_scale_sigma(prepare_slices(volume, max_slices))


def _excess_kurtosis(residuals: np.ndarray) -> float:
    """Excess kurtosis of the noise, from fit residuals each scaled to unit variance (0 for Gaussian noise)."""
    second = (residuals**2).mean(axis=(1, 2))
    usable = second > 0
    if not usable.any():
        return 0.0
    fourth = (residuals[usable] ** 4).mean(axis=(1, 2)) / second[usable] ** 2
    return float(max(fourth.mean() - 3.0, 0.0))


def _level(variance: np.ndarray, dof: float) -> float:
    """Mean of pure-noise patch variances from a low quantile of ``variance``: pure-noise variances spread
    like a scaled chi-square with ``dof`` degrees of freedom, and patches with structure left only add."""
    return float(np.quantile(variance, _QUANTILE) / (stats.chi2.ppf(_QUANTILE, dof) / dof))


def _degrees_of_freedom(flat: FlatPatches, effective_samples: float) -> float:
    """Fewer independent voxels (correlation) and heavy tails (spiky speckle) both widen the spread of
    pure-noise patch variances: a chi-square with ``2k / (2 + excess kurtosis)`` degrees of freedom matches."""
    return 2.0 * effective_samples / (2.0 + _excess_kurtosis(flat.residuals))


def estimate_noise(array: np.ndarray, max_slices: int = MAX_SLICES) -> NoiseEstimate:
    """Full SD and correlation of the noise in an image, without a noise-free reference.

    Works in-plane (axis 0 is the slice axis), so thick-slice volumes and 2D images are handled alike.
    Zeroed backgrounds and constant CT padding are ignored; so are non-finite voxels.

    Args:
        array: a 2D ``(H, W)`` or 3D ``(D, H, W)`` image.
        max_slices: at most this many evenly spaced slices are measured.

    Returns:
        The estimate. Images under 12 voxels in-plane, or with no flat patch of valid voxels, get the
        fine-scale estimate as ``sigma`` (and no correlation); a constant image gets 0.
    """
    volume = _as_volume(array)
    if volume.shape[1] < 3 or volume.shape[2] < 3:
        return NoiseEstimate(0.0, 0.0)
    prepared = prepare_slices(volume, max_slices)
    fine = _fine_scale_sigma(prepared)
    if fine == 0.0:
        return NoiseEstimate(0.0, 0.0)
    candidates = measure_patches(prepared)
    if candidates is None:
        return NoiseEstimate(fine, fine)
    flat = choose_flat_patches(candidates)
    correlation = measure_correlation(flat.residuals)
    variance = flat.variance
    if candidates.magnitude:
        # Choose again without the background, which is the flattest part of an MR image but holds less
        # noise than the tissue; what remains near it is corrected for the Rician bias.
        flat = choose_flat_patches(candidates, correlation.sd_per_fine_sd)
        correlation = measure_correlation(flat.residuals)
        variance = flat.variance / rician_variance_factor(flat.mean_to_sd)
    level = _level(variance, _degrees_of_freedom(flat, correlation.effective_samples))
    variance = level / (1.0 - correlation.fit_loss)
    return NoiseEstimate(
        sigma=float(np.sqrt(max(variance, 0.0))),
        fine_scale_sigma=fine,
        correlation=correlation.lag1,
        correlation_z=through_plane_correlation(volume, flat),
        kernel=correlation.kernel,
        patches=int(flat.variance.size),
        magnitude=candidates.magnitude,
    )


def estimate_noise_sigma(array: np.ndarray, max_slices: int = MAX_SLICES) -> float:
    """Standard deviation of the noise (correlated part included), in the array's units.

    Args:
        array: a 2D ``(H, W)`` or 3D ``(D, H, W)`` image; non-finite voxels are ignored.
        max_slices: at most this many evenly spaced slices are used.

    Returns:
        The estimated SD; 0.0 for a constant image.
    """
    return estimate_noise(array, max_slices).sigma
