"""Blind estimation of the noise from the image itself: its full standard deviation and how it correlates.

Real scanners rarely produce white noise: filtered back projection gives CT a mid-frequency texture,
zero-filled MR k-space and ultrasound speckle give grain several voxels wide. A high-pass filter sees only
the finest part of such noise, so :func:`estimate_noise` measures the noise where the image is flat instead:

1. Small in-plane patches are found whose smoothed image shows no structure
   (:mod:`~MedicalDenoiseLib.estimation.flat_patches`); a quadratic fit removes ramps and shading.
2. The residuals' autocovariance gives the noise correlation and the share of the noise the fit removed
   (:mod:`~MedicalDenoiseLib.estimation.noise_correlation`), which is added back. Noise correlated beyond a
   16-voxel patch (speckle from few scatterers) is measured again in patches twice as wide.
3. The level is a low quantile of the patch variances (patches with structure left in them only add
   variance), corrected for where that quantile lies for pure noise of the measured correlation, and, on MR
   magnitude images, for the Rician or non-central chi bias of dark patches
   (:mod:`~MedicalDenoiseLib.estimation.rician`).
4. An MR magnitude image with a chi-distributed background (air) gives the noise there too, and the number
   of coils (:mod:`~MedicalDenoiseLib.estimation.noise_background`). Tissue reading well above it holds
   anatomy or Gibbs ringing in its flattest patches (a 1 mm brain has no flat patch), so the estimate
   moves to the background's.

:func:`estimate_noise_sigma` returns the full SD alone. :func:`estimate_fine_scale_sigma` keeps the
high-pass estimate that the shipped models were trained to be conditioned on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, stats

from .flat_patches import TILE, FlatPatches, PreparedSlices, choose_flat_patches, measure_patches, prepare_slices
from .noise_background import Background, find_background, with_background
from .noise_correlation import NoiseCorrelation, measure_correlation, through_plane_correlation
from .rician import rician_variance_factor
from .robust import mad_sd

__all__ = ["NoiseEstimate", "FlatNoise", "estimate_noise", "estimate_noise_sigma", "estimate_fine_scale_sigma",
           "flat_patch_noise", "measure_flat_noise", "pure_noise_level", "as_volume"]

MAX_SLICES = 48  # evenly spaced slices measured; the estimate converges long before
# Quantile of the patch variances used as the level: low enough that patches with some texture left in them
# (which only add variance) do not move it, high enough to be stable.
_QUANTILE = 0.4
# When at least this share of the candidate patches is flat the image is mostly noise (a speckle region), so
# the residuals' correlation is the noise's, beyond the patch too. The real scans in ../shared/data show
# 0.06-0.48 (their far lags are pulled down by anatomy as much as by noise); simulated speckle mostly 0.75-1.
_NOISE_SHARE = 0.5
# Outer-lag deficit of the noise correlation (NoiseCorrelation.beyond_patch) above which the noise reaches
# beyond a 16-voxel patch and wider patches are measured: speckle from few scatterers shows 0.06–0.09,
# MR, CT and fully developed speckle under 0.03.
_BEYOND_PATCH = 0.04


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


def as_volume(array: np.ndarray) -> np.ndarray:
    """A 2D ``(H, W)`` image as a one-slice volume ``(1, H, W)``; a 3D one as it is."""
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
    volume = as_volume(array)
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


def pure_noise_level(variance: np.ndarray, dof: float) -> float:
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
    volume = as_volume(array)
    if volume.shape[1] < 3 or volume.shape[2] < 3:
        return NoiseEstimate(0.0, 0.0)
    prepared = prepare_slices(volume, max_slices)
    fine = _fine_scale_sigma(prepared)
    if fine == 0.0:
        return NoiseEstimate(0.0, 0.0)
    noise = measure_flat_noise(prepared)
    if noise is None:
        return NoiseEstimate(fine, fine)
    return NoiseEstimate(
        sigma=noise.sd,
        fine_scale_sigma=fine,
        correlation=noise.correlation.lag1,
        correlation_z=through_plane_correlation(volume, noise.flat),
        kernel=noise.correlation.kernel,
        patches=int(noise.flat.variance.size),
        magnitude=noise.magnitude,
    )


@dataclass(frozen=True)
class FlatNoise:
    """What the flat patches of an image tell about its noise.

    Attributes:
        flat: the flat patches (of the object's tissue on an MR magnitude image).
        correlation: the noise correlation measured in them.
        variance: ``(N,)`` their noise variance per voxel, corrected for the Rician / chi bias but not yet
            for what the fit removed (``correlation.fit_loss``).
        dof: degrees of freedom of the variances' spread (:func:`pure_noise_level`).
        background: the MR magnitude background, when there is one.
        magnitude: whether the image was treated as an MR magnitude image.
    """

    flat: FlatPatches
    correlation: NoiseCorrelation
    variance: np.ndarray
    dof: float
    background: Background | None
    magnitude: bool

    @property
    def tissue_sd(self) -> float:
        """The noise SD the flat patches give."""
        level = pure_noise_level(self.variance, self.dof)
        return float(np.sqrt(max(level / (1.0 - self.correlation.fit_loss), 0.0)))

    @property
    def sd(self) -> float:
        """The noise SD, the background weighed in (:func:`with_background`)."""
        tissue = self.tissue_sd
        return with_background(tissue, self.background) if self.background is not None else tissue

    @property
    def reaches_beyond(self) -> bool:
        """Whether the image is mostly noise and that noise is correlated beyond the patches."""
        return self.flat.share >= _NOISE_SHARE and self.correlation.beyond_patch > _BEYOND_PATCH


def flat_patch_noise(prepared: PreparedSlices, largest_tile: int = TILE) -> FlatNoise | None:
    """The noise in the flat patches of tiles up to ``largest_tile``; None without any patch of valid voxels."""
    candidates = measure_patches(prepared, largest_tile)
    if candidates is None:
        return None
    flat = choose_flat_patches(candidates)
    correlation = measure_correlation(flat.residuals, flat.share >= _NOISE_SHARE)
    variance = flat.variance
    background = None
    if candidates.magnitude:
        # Choose again without the background, which is the flattest part of an MR image but holds less
        # noise than the tissue; what remains near it is corrected for the Rician (or, with several coils,
        # non-central chi) bias.
        background = find_background(candidates)
        dof = background.dof if background is not None else 2.0
        flat = choose_flat_patches(candidates, correlation.sd_per_fine_sd, dof)
        correlation = measure_correlation(flat.residuals, flat.share >= _NOISE_SHARE)
        variance = flat.variance / rician_variance_factor(flat.mean_to_sd, dof)
    return FlatNoise(flat, correlation, variance, _degrees_of_freedom(flat, correlation.effective_samples),
                     background, candidates.magnitude)


def measure_flat_noise(prepared: PreparedSlices) -> FlatNoise | None:
    """:func:`flat_patch_noise` with 16-voxel patches, or twice as wide where the noise reaches beyond them
    (sparse speckle), which then keep more of it. Only where the image is mostly noise, or wider patches
    would add structure; an MR background, when there is one, measures the noise without them."""
    noise = flat_patch_noise(prepared)
    if noise is not None and noise.reaches_beyond and noise.background is None:
        noise = flat_patch_noise(prepared, 2 * TILE) or noise
    return noise


def estimate_noise_sigma(array: np.ndarray, max_slices: int = MAX_SLICES) -> float:
    """Standard deviation of the noise (correlated part included), in the array's units.

    Args:
        array: a 2D ``(H, W)`` or 3D ``(D, H, W)`` image; non-finite voxels are ignored.
        max_slices: at most this many evenly spaced slices are used.

    Returns:
        The estimated SD; 0.0 for a constant image.
    """
    return estimate_noise(array, max_slices).sigma
