"""Noise power spectra: the texture of noise, which its standard deviation does not tell.

Radiologists reject a CT whose noise moved to low frequencies ("plastic", "waxy") even at a lower SD, so the
noise power spectrum (NPS) is reported beside it (ICRU Report 87; Solomon et al., Med. Phys. 2012):

- :func:`radial_nps`: the 2D NPS of square in-plane regions, ``Δx Δy / (N_x N_y) · ⟨|DFT(ROI − plane)|²⟩``
  (HU² mm² for CT in HU), averaged over rings of equal radial frequency; it integrates to the variance.
- :func:`flat_rois` chooses those regions on a real image: the flattest squares of the foreground.
- :func:`peak_frequency`, :func:`mean_frequency`: one number each for where the power sits.
- :func:`power_spectrum`: ``⟨|FFT|²⟩`` of noise realisations in any dimension, unnormalised, which is the
  noise power spectrum BM3D/BM4D take instead of a σ (``N σ²`` everywhere for white noise of SD σ).
"""
from __future__ import annotations

import numpy as np

from .reference_free import _in_plane_gradient_magnitude

__all__ = ["power_spectrum", "flat_rois", "extract_rois", "radial_nps", "peak_frequency", "mean_frequency"]


def power_spectrum(samples: np.ndarray) -> np.ndarray:
    """Mean ``|FFT|²`` over the first axis of ``samples`` (realisations of zero-mean noise, any shape after it).

    Unnormalised FFT, so white noise of SD σ gives ``N σ²`` in every bin (N: voxels per realisation): the
    PSD convention of the ``bm3d`` and ``bm4d`` packages.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim < 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must be (K, ...) with K >= 1 realisations, got shape {samples.shape}")
    axes = tuple(range(1, samples.ndim))
    return np.mean(np.abs(np.fft.fftn(samples, axes=axes)) ** 2, axis=0)


def flat_rois(image: np.ndarray, foreground: np.ndarray, size: int, count: int,
              smoothing_sigma: float = 1.5) -> list[tuple[int, int, int]]:
    """Corners ``(z, y, x)`` of up to ``count`` in-plane ``size × size`` squares in flat tissue.

    Candidates lie on a grid of half-overlapping squares in each axial slice and must be wholly inside
    ``foreground``; the ones with the lowest mean in-plane gradient (after a Gaussian of ``smoothing_sigma``
    voxels, so noise does not decide) are kept. Choose them on the input and reuse them for every output.

    Args:
        image: ``(z, y, x)`` or ``(y, x)``.
        foreground: boolean mask of the same shape.
        size: square edge in pixels (>= 4).
        count: most squares returned.

    Returns:
        Corners, flattest first (fewer than ``count``, possibly none, when the foreground is small).
    """
    image = np.asarray(image, dtype=np.float64)
    volume = image if image.ndim == 3 else image[None]
    mask = np.asarray(foreground, dtype=bool).reshape(volume.shape)
    if size < 4 or count < 1:
        raise ValueError(f"size must be >= 4 and count >= 1, got {size} and {count}")
    gradient = _in_plane_gradient_magnitude(volume, smoothing_sigma)
    step = max(1, size // 2)
    candidates = []
    for z in range(volume.shape[0]):
        for y in range(0, volume.shape[1] - size + 1, step):
            for x in range(0, volume.shape[2] - size + 1, step):
                window = (z, slice(y, y + size), slice(x, x + size))
                if mask[window].all():
                    candidates.append((float(gradient[window].mean()), (z, y, x)))
    candidates.sort(key=lambda pair: pair[0])
    return [corner for _, corner in candidates[:count]]


def extract_rois(image: np.ndarray, corners: list[tuple[int, int, int]], size: int) -> np.ndarray:
    """The squares at ``corners`` (from :func:`flat_rois`) as float64 ``(K, size, size)``."""
    volume = np.asarray(image, dtype=np.float64)
    volume = volume if volume.ndim == 3 else volume[None]
    if not corners:
        raise ValueError("corners must name at least one region")
    return np.stack([volume[z, y: y + size, x: x + size] for z, y, x in corners])


def _detrended(rois: np.ndarray) -> np.ndarray:
    """Each ROI minus its least-squares plane, so a slow intensity ramp is not counted as low-frequency noise."""
    size_y, size_x = rois.shape[1:]
    y, x = np.mgrid[:size_y, :size_x]
    design = np.stack([np.ones(y.size), y.ravel(), x.ravel()], axis=1).astype(np.float64)
    flat = rois.reshape(len(rois), -1).T
    coefficients = np.linalg.lstsq(design, flat, rcond=None)[0]
    return (flat - design @ coefficients).T.reshape(rois.shape)


def radial_nps(rois: np.ndarray, pixel_size_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged 2D noise power spectrum of square regions.

    Args:
        rois: ``(K, N, N)`` regions of noise (or of a flat image: each is detrended by a plane first).
        pixel_size_mm: pixel edge; frequencies come out in cycles/mm and power in units² · mm².

    Returns:
        ``(frequencies, nps)``: ring centres ``k / (N Δx)`` for ``k = 0 … N/2`` and the mean 2D NPS over
        the frequencies nearest each ring. ``Σ NPS_2D Δf²`` over the full 2D grid equals the variance.
    """
    rois = np.asarray(rois, dtype=np.float64)
    if rois.ndim != 3 or rois.shape[1] != rois.shape[2] or rois.shape[1] < 4:
        raise ValueError(f"rois must be (K, N, N) with N >= 4, got shape {rois.shape}")
    if not pixel_size_mm > 0:
        raise ValueError(f"pixel_size_mm must be > 0, got {pixel_size_mm}")
    n = rois.shape[1]
    nps_2d = power_spectrum(_detrended(rois)) * (pixel_size_mm**2 / (n * n))
    k = np.fft.fftfreq(n, 1.0 / n)
    ring = np.rint(np.hypot(*np.meshgrid(k, k, indexing="ij"))).astype(int)
    rings = n // 2 + 1
    inside = ring < rings
    sums = np.bincount(ring[inside], weights=nps_2d[inside], minlength=rings)
    counts = np.bincount(ring[inside], minlength=rings)
    return np.arange(rings) / (n * pixel_size_mm), sums / np.maximum(counts, 1)


def peak_frequency(frequencies: np.ndarray, nps: np.ndarray) -> float:
    """The frequency of the NPS's maximum, the zero frequency left out (a plane was fitted away there)."""
    return float(frequencies[1:][np.argmax(nps[1:])])


def mean_frequency(frequencies: np.ndarray, nps: np.ndarray) -> float:
    """The NPS-weighted mean frequency ``Σ f·NPS / Σ NPS`` (ring-averaged, so weight by the ring's
    circumference ``f`` too: the 2D mean radius of the power)."""
    weights = np.asarray(nps) * np.asarray(frequencies)
    total = float(weights.sum())
    return float((weights * frequencies).sum() / total) if total > 0 else float("nan")
