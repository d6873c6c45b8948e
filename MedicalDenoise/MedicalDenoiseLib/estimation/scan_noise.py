"""The noise of one scan, measured from the scan: its level and spectrum, to draw more noise like it or to weigh
frequencies by it.

Two users need the scan's own spectrum and level: the Wiener refinement after the network
(:mod:`..inference.wiener_refinement`) and Recorrupted-to-Recorrupted adaptation (:mod:`..adaptation.recorrupted_pairs`).
Two measurements, the better one first:

- **The acquired k-space band** (MR). Zero-filled k-space leaves the outer frequencies of the image empty, noise
  and anatomy alike; inside the band the noise is flat. The band's edge is the sharpest fall of the image's power
  along each axis; the level is the median power in the band's outer corner, where anatomy is weakest. On the
  template acquired with 65 % × 65 % × 80 % of k-space this reads the noise SD within 3 % at 3 % and 6 %, where
  the flat-patch estimate reads 15–45 % high (its kernel takes some smooth anatomy for grain).
- **The flat-patch autocorrelation** (any modality): the estimator's in-plane kernel as a power spectrum, its
  through-plane lag-1 correlation, and its full noise SD (or a share of it: an uncertain level a caller would
  rather under-state, see ``flat_patch_share``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from .noise_estimation import NoiseEstimate

__all__ = ["ScanNoise", "measure_scan_noise", "acquired_band"]

# An axis counts as band-limited when its power falls by this factor from one frequency to the next (zero-filled
# k-space: 7–160; anatomy alone: under 1.5).
_EDGE_FALL = 4.0
# The band's outer corner: frequencies above this fraction of the band edge along every band-limited axis.
_CORNER = 0.7
_MIN_CORNER_SAMPLES = 200
_MAX_BAND_SLICES = 64


@dataclass(frozen=True)
class ScanNoise:
    """Noise like the scan's, in normalised units.

    Attributes:
        sd: its standard deviation.
        band: the acquired k-space extent per axis ``(z, y, x)`` in cycles per voxel (0.5: the whole axis), when
            the image shows one; the noise is then flat inside it.
        kernel: else the in-plane autocorrelation ``(2L+1, 2L+1)`` it follows.
        correlation_z: lag-1 correlation between slices (with ``kernel``).
        measured_by: how, in words.
    """

    sd: float
    band: tuple[float, float, float] | None = None
    kernel: np.ndarray | None = None
    correlation_z: float = 0.0
    measured_by: str = ""

    def draw(self, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        """One realisation of shape ``(D, H, W)`` (float32, periodic)."""
        white = rng.standard_normal(shape)
        if self.band is not None:
            spectrum = np.fft.fftn(white)
            spectrum *= _band_mask(shape, self.band)
            noise = np.real(np.fft.ifftn(spectrum))
        else:
            noise = _through_plane(white, self.correlation_z)
            if self.kernel is not None:
                noise = np.real(np.fft.ifft2(np.fft.fft2(noise) * _kernel_filter(self.kernel, shape[1:])))
        spread = float(noise.std())
        return (noise * (self.sd / spread if spread > 0 else 0.0)).astype(np.float32)

    def describe(self) -> str:
        return f"noise SD {self.sd:.4g} (normalised), {self.measured_by}"


def _band_mask(shape: tuple[int, ...], band: tuple[float, ...]) -> np.ndarray:
    masks = [np.abs(np.fft.fftfreq(n)) <= edge + 1e-9 for n, edge in zip(shape, band)]
    return masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]


def _through_plane(white: np.ndarray, correlation: float) -> np.ndarray:
    """``a·u[d] + b·u[d−1]`` with ``ab / (a² + b²)`` the wanted lag-1 correlation (at most 0.5 this way)."""
    rho = float(np.clip(correlation, 0.0, 0.49))
    if rho == 0.0 or white.shape[0] < 2:
        return white
    ratio = (1 - np.sqrt(1 - 4 * rho * rho)) / (2 * rho)
    return white + ratio * np.roll(white, 1, axis=0)


def _kernel_filter(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The amplitude filter whose power spectrum is the kernel's (negative parts of the spectrum clipped)."""
    lags = kernel.shape[0] // 2
    wrapped = np.zeros(shape)
    for dy in range(-lags, lags + 1):
        for dx in range(-lags, lags + 1):
            wrapped[dy % shape[0], dx % shape[1]] += kernel[dy + lags, dx + lags]
    power = np.maximum(np.real(np.fft.fft2(wrapped)), 0.0)
    return np.sqrt(power / max(float(power.mean()), 1e-12))


def acquired_band(power: np.ndarray) -> tuple[float, float, float]:
    """Per axis, the highest frequency before the image's power falls ``_EDGE_FALL``-fold (0.5 when it never
    does). ``power``: ``|FFT|²`` of the volume."""
    band = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        marginal = power.mean(axis=others)
        n = marginal.shape[0]
        frequencies = np.abs(np.fft.fftfreq(n))
        order = np.unique(frequencies)
        profile = np.array([marginal[frequencies == f].mean() for f in order])
        falls = profile[:-1] / np.maximum(profile[1:], 1e-30)
        falls[: max(1, len(order) // 5)] = 0.0  # the lowest frequencies hold anatomy's own steep fall
        edge = int(np.argmax(falls))
        band.append(float(order[edge]) if falls[edge] >= _EDGE_FALL else 0.5)
    return tuple(band)


def _band_noise(volume: np.ndarray) -> ScanNoise | None:
    """The k-space band measurement, or None when no in-plane axis is band-limited."""
    if volume.ndim != 3 or min(volume.shape) < 16:
        return None
    # The central slices are enough to read the band and level; a whole large volume's spectrum would cost more
    # memory than denoising it (single precision: 12 bytes a voxel for the spectrum and its power).
    start = max(0, (volume.shape[0] - _MAX_BAND_SLICES) // 2)
    volume = np.asarray(volume[start: start + _MAX_BAND_SLICES], dtype=np.float32)
    power = np.abs(scipy.fft.fftn(volume - volume.mean()))
    power **= 2
    power /= volume.size
    band = acquired_band(power)
    if band[1] >= 0.5 and band[2] >= 0.5:
        return None
    grids = np.meshgrid(*[np.abs(np.fft.fftfreq(n)) for n in volume.shape], indexing="ij", sparse=True)
    inside = _band_mask(volume.shape, band)
    corner = inside.copy()
    for grid, edge in zip(grids, band):
        corner &= grid >= _CORNER * edge
    if corner.sum() < _MIN_CORNER_SAMPLES:
        return None
    # Periodogram values are exponential about their mean: its median is ln 2 of the mean.
    density = float(np.median(power[corner])) / np.log(2.0)
    sd = float(np.sqrt(density * inside.mean()))
    extent = " × ".join(f"{min(1.0, 2 * edge):.0%}" for edge in band)
    return ScanNoise(sd, band=band, measured_by=f"acquired k-space {extent} (z × y × x) read from the image's spectrum")


def measure_scan_noise(normalized: np.ndarray, estimate: NoiseEstimate, modality: str,
                       flat_patch_share: float = 1.0) -> ScanNoise:
    """The scan's noise: the k-space band for MR when the image shows one, else the flat-patch kernel.

    Args:
        normalized: the image, ``(D, H, W)``; a 2D image has no band to read.
        estimate: the estimator's result for it (level, kernel, through-plane correlation).
        modality: "mr" looks for a k-space band first.
        flat_patch_share: the share of the flat-patch level to use (the band's level is always used whole).
    """
    if modality == "mr":
        found = _band_noise(normalized)
        if found is not None:
            return found
    share = "" if flat_patch_share == 1.0 else f", drawn at {flat_patch_share:g} of its level"
    return ScanNoise(flat_patch_share * float(estimate.sigma), kernel=estimate.kernel,
                     correlation_z=float(estimate.correlation_z or 0.0),
                     measured_by=f"flat-patch autocorrelation{share}")
