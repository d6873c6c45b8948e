"""Ultrasound speckle: the envelope of echoes from many sub-resolution scatterers, shown log-compressed.

Each voxel holds complex Gaussian scatterers whose amplitude is the echogenicity; the echo signal is that
field blurred by the point-spread function (PSF), and the B-mode image is its envelope, log-compressed to a
dynamic range (Burckhardt, IEEE Trans. Sonics Ultrason. 1978; Wagner et al., IEEE Trans. Sonics Ultrason.
1983). With many scatterers per resolution cell the speckle is fully developed: the envelope is Rayleigh
(mean/SD = 1.91), the grain is the PSF's size, and after log compression the noise is additive with an SD of
5.57 dB whatever the echogenicity. Fewer scatterers give darker, spikier, non-Rayleigh speckle.

The PSF is a Gaussian envelope; its carrier is left out because modulating a circular white field by a carrier
changes no envelope statistic. In real scan-converted B-mode frames the grain is longer laterally than axially
(measured lag-1 correlations 0.2–0.75 axially against 0.5–0.94 laterally), hence the default lengths.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .parameter_ranges import Choice, LogUniform, Sometimes, Uniform
from .realisation import NoiseContext, NoiseRealisation

__all__ = ["UltrasoundSpeckle", "ULTRASOUND_SPECKLE_RANGES", "speckle_envelope", "LOG_SPECKLE_MEAN_DB"]

LOG_SPECKLE_MEAN_DB = -10.0 * np.euler_gamma / math.log(10.0)
"""Mean of ``10·log10(I / E[I])`` for fully developed speckle (exponential intensity): −2.51 dB."""

_FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _kernel_energy(sigmas: tuple[float, ...]) -> float:
    """``Σ g²`` of the normalised sampled Gaussian kernel that ``ndimage.gaussian_filter`` applies."""
    energy = 1.0
    for s in sigmas:
        if s > 0:
            radius = int(4.0 * s + 0.5)
            delta = np.zeros(2 * radius + 1)
            delta[radius] = 1.0
            energy *= float((ndimage.gaussian_filter1d(delta, s, mode="constant") ** 2).sum())
    return energy


def speckle_envelope(amplitude: np.ndarray, rng: np.random.Generator, psf: tuple[float, ...],
                     scatterers_per_cell: float = math.inf) -> np.ndarray:
    """Envelope of the echo field of ``amplitude`` (linear echogenicity) for a Gaussian PSF.

    Args:
        amplitude: ``(…)`` echogenicity, linear, ≥ 0.
        rng: the random generator.
        psf: Gaussian SD of the PSF per axis of ``amplitude``, in voxels (0: no blur along that axis).
        scatterers_per_cell: mean scatterer count per resolution cell (the product of the PSF's FWHMs);
            ``inf`` gives a complex Gaussian field, i.e. fully developed speckle.

    Returns:
        float32 envelope, scaled so that ``E[envelope²]`` equals the PSF-smoothed ``amplitude²``.
    """
    # Scatterers beyond the edges echo into the image too: extend the echogenicity by reflection first.
    pads = [(int(4.0 * s + 0.5),) * 2 for s in psf]
    padded = np.pad(np.asarray(amplitude, dtype=np.float32), pads, mode="symmetric")
    field = rng.standard_normal((2, *padded.shape), dtype=np.float32)
    if math.isfinite(scatterers_per_cell):
        cell = math.prod(_FWHM_PER_SD * s for s in psf if s > 0)
        per_voxel = scatterers_per_cell / cell
        # A sum of n complex Gaussian scatterers is complex Gaussian with n times the power.
        field *= np.sqrt(rng.poisson(per_voxel, padded.shape) / per_voxel).astype(np.float32)
    field *= padded * np.float32(1.0 / math.sqrt(2.0))
    inside = tuple(slice(p, p + n) for (p, _), n in zip(pads, amplitude.shape))
    echo = [ndimage.gaussian_filter(part, psf, mode="constant")[inside] for part in field]
    return (np.hypot(*echo) / math.sqrt(_kernel_energy(psf))).astype(np.float32)


@dataclass(frozen=True)
class UltrasoundSpeckle:
    """Speckled, log-compressed B-mode image of an echogenicity map, with its speckle-free counterpart.

    Attributes:
        axial_psf: Gaussian SD of the PSF along the beam (``axial_axis``), voxels.
        lateral_psf: SD across the beam, in-plane, voxels.
        elevational_psf: SD through the frame (axis 0 of a 3D input): None = ``lateral_psf`` (a 3D probe's
            volume); 0 = independent frames (a 2D frame sequence).
        dynamic_range_db: dB shown between the bottom and the top of the display (40–60 on scanners).
        scatterers_per_cell: scatterers per resolution cell; ``inf`` (or ≳ 10) is fully developed speckle.
        reference: linear amplitude shown at the top of the display; brighter echoes saturate.
        display_range: ``(low, high)`` of the displayed values (0–1 normalised, 0–255 for 8-bit).
        axial_axis: the beam direction, −2 (rows, depth down) or −1.
        input_log_compressed: the input is itself a B-mode display on ``display_range`` with this dynamic
            range (e.g. a real frame); it is decompressed so that its flat regions are the mean level of the
            new speckle. Otherwise the input is linear echogenicity.
    """

    axial_psf: float = 1.0
    lateral_psf: float = 2.0
    elevational_psf: float | None = None
    dynamic_range_db: float = 50.0
    scatterers_per_cell: float = math.inf
    reference: float = 1.0
    display_range: tuple[float, float] = (0.0, 1.0)
    axial_axis: int = -2
    input_log_compressed: bool = False

    def __post_init__(self) -> None:
        for name in ("axial_psf", "lateral_psf"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0 (voxels), got {getattr(self, name)}")
        if self.elevational_psf is not None and not (math.isfinite(self.elevational_psf) and self.elevational_psf >= 0):
            raise ValueError(f"elevational_psf must be None or a finite number >= 0, got {self.elevational_psf}")
        if not (math.isfinite(self.dynamic_range_db) and self.dynamic_range_db > 0):
            raise ValueError(f"dynamic_range_db must be a finite number > 0, got {self.dynamic_range_db}")
        if not self.scatterers_per_cell > 0:
            raise ValueError(f"scatterers_per_cell must be > 0, got {self.scatterers_per_cell}")
        if not (math.isfinite(self.reference) and self.reference > 0):
            raise ValueError(f"reference must be a finite number > 0, got {self.reference}")
        low, high = self.display_range
        if not high > low:
            raise ValueError(f"display_range must be (low, high) with high > low, got {self.display_range}")
        if self.axial_axis not in (-2, -1):
            raise ValueError(f"axial_axis must be -2 or -1, got {self.axial_axis}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The speckled B-mode image (float32)."""
        return self.simulate(image, rng).noisy

    def _psf(self, ndim: int) -> tuple[float, ...]:
        in_plane = (self.axial_psf, self.lateral_psf) if self.axial_axis == -2 else (self.lateral_psf, self.axial_psf)
        if ndim == 2:
            return in_plane
        elevational = self.lateral_psf if self.elevational_psf is None else self.elevational_psf
        return (elevational, *in_plane)

    def _compress(self, intensity_db: np.ndarray) -> np.ndarray:
        """dB relative to ``reference`` → display values, clipped like a scanner's display."""
        low, high = self.display_range
        level = np.clip(1.0 + intensity_db / self.dynamic_range_db, 0.0, 1.0)
        return (low + (high - low) * level).astype(np.float32)

    def _amplitude(self, image: np.ndarray) -> np.ndarray:
        if not self.input_log_compressed:
            return np.clip(image, 0.0, None)
        low, high = self.display_range
        level = (image - low) / (high - low)
        # Flat regions of the input are read as the mean log level of speckle, hence the −2.51 dB offset.
        amplitude = self.reference * 10.0 ** (((level - 1.0) * self.dynamic_range_db - LOG_SPECKLE_MEAN_DB) / 20.0)
        return np.where(level > 0, amplitude, 0.0).astype(np.float32)

    def simulate(self, image: np.ndarray, rng: np.random.Generator,
                 context: NoiseContext | None = None) -> NoiseRealisation:
        """Speckles ``image`` and log-compresses it.

        Args:
            image: ``(H, W)`` frame or ``(D, H, W)`` volume / frame sequence (see ``elevational_psf``).
            rng: the random generator.
            context: unused.

        Returns:
            ``noisy``: the B-mode image; ``clean``: the PSF-smoothed echogenicity compressed the same way, at
            the mean log level of fully developed speckle (so the noise averages to zero where unclipped).
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim not in (2, 3) or min(image.shape) < 1:
            raise ValueError(f"image must be 2D (H, W) or 3D (D, H, W), got shape {image.shape}")
        psf = self._psf(image.ndim)
        amplitude = self._amplitude(image)
        envelope = speckle_envelope(amplitude, rng, psf, self.scatterers_per_cell)
        tiny = np.float32(1e-30)  # zero echo is −∞ dB: shown as the bottom of the display
        noisy = self._compress(20.0 * np.log10(np.maximum(envelope / self.reference, tiny)))
        mean_power = ndimage.gaussian_filter(amplitude**2, [s / math.sqrt(2.0) for s in psf], mode="reflect")
        clean_db = 10.0 * np.log10(np.maximum(mean_power / self.reference**2, tiny)) + LOG_SPECKLE_MEAN_DB
        clean = self._compress(clean_db)
        return NoiseRealisation(noisy, clean, float(np.std(noisy - clean)), asdict(self))


ULTRASOUND_SPECKLE_RANGES = {
    "axial_psf": Uniform(0.5, 1.5),
    "lateral_psf": Uniform(0.8, 3.5),
    "elevational_psf": Choice((None, 0.0)),
    "dynamic_range_db": Uniform(40.0, 80.0),
    "scatterers_per_cell": Sometimes(0.25, LogUniform(0.5, 10.0), math.inf),
    "input_log_compressed": True,
}
"""Training ranges for normalised B-mode volumes (display 0–1). The PSF lengths span the grain of real
scan-converted frames; 40–80 dB gives a log-speckle SD of 0.14–0.07 of the display, as measured on them
(0.04–0.14 after the scanners' own speckle reduction); a quarter of draws have too few scatterers for fully
developed speckle."""
