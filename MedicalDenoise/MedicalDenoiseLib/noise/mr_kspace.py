"""MR acquisition simulated in k-space: a smaller acquired matrix, zero-filled reconstruction, partial Fourier,
receiver noise on the acquired samples only, several coils combined by root-sum-of-squares, magnitude.

Clinical sequences acquire fewer k-space samples than they display and zero-fill (interpolate ×1–2.5) on
reconstruction, so their noise is correlated between neighbouring voxels (sinc-shaped, lag-1 correlation up to
~0.65) and lower than the same receiver noise at full sampling; a root-sum-of-squares coil combination makes
it non-central-chi and, after intensity normalisation, stronger far from the coils (Constantinides et al.,
MRM 1997; Aja-Fernández & Vegas-Sánchez-Ferrero, Statistical Analysis of Noise in MRI, 2016). The same
acquisition without noise is the training target: the resolution lost by zero-filling is not noise.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

from .parameter_ranges import Choice, LogUniform, PerAxis, Sometimes, Uniform
from .realisation import NoiseContext, NoiseRealisation

__all__ = ["MRKSpaceNoise", "MR_KSPACE_RANGES", "coil_sensitivities", "kspace_mask"]

ACQUISITIONS = ("3d", "2d")
_COIL_RING = 1.3  # coil centres on an ellipse 1.3 × the half field of view from the centre …
_COIL_WIDTH = 0.8  # … each seeing a Gaussian region of this width (half-FOV units): ~4× less signal at the centre


def coil_sensitivities(shape: tuple[int, int], coils: int) -> np.ndarray:
    """Smooth real receive sensitivities of ``coils`` surface coils around the in-plane field of view.

    One coil is a uniform body coil. Several sit evenly on a ring around the image, each falling off as a
    Gaussian; they are scaled so that ``Σ_c S_c²`` averages 1 over the image.

    Returns:
        float32 ``(coils, H, W)``.
    """
    if coils == 1:
        return np.ones((1, *shape), np.float32)
    y = np.linspace(-1.0, 1.0, shape[0])[:, None]
    x = np.linspace(-1.0, 1.0, shape[1])[None, :]
    angles = 2 * np.pi * np.arange(coils) / coils
    sens = np.stack([np.exp(-((y - _COIL_RING * np.sin(a)) ** 2 + (x - _COIL_RING * np.cos(a)) ** 2)
                            / (2 * _COIL_WIDTH**2)) for a in angles])
    sens /= np.sqrt((sens**2).sum(axis=0).mean())
    return sens.astype(np.float32)


def kspace_mask(n: int, fraction: float, partial_fourier: float = 1.0) -> np.ndarray:
    """Acquired samples along one axis, in FFT order: the central ``round(fraction·n)`` frequencies, of which
    partial Fourier keeps only the first ``round(partial_fourier·m)`` (from the most negative frequency).

    Returns:
        bool ``(n,)``.
    """
    m = min(n, max(1, round(fraction * n)))
    low = -(m // 2)
    high = low + max(1, round(partial_fourier * m)) - 1
    k = np.fft.fftfreq(n, 1.0 / n)
    return (k >= low) & (k <= high)


@dataclass(frozen=True)
class MRKSpaceNoise:
    """A noisy MR acquisition of a clean magnitude image, and the same acquisition without noise.

    Attributes:
        sigma: SD of the real and of the imaginary receiver noise in image units, as it would be in the image
            of one coil at full sampling. Zero-filling lowers the image's SD to ``sigma·√(acquired fraction)``.
        acquired: central k-space fraction kept per axis ``(z, y, x)`` (a 2-tuple means ``(y, x)`` with all of
            z); the rest is zero-filled, i.e. the image is interpolated ×1/fraction.
        partial_fourier: fraction of the acquired samples kept along ``partial_fourier_axis`` (0.5–1, e.g.
            5/8), zero-filled without conjugate synthesis.
        partial_fourier_axis: image axis of partial Fourier (−2: y, −1: x, −3: z of a 3D acquisition).
        coils: receive coils, combined by root-sum-of-squares and normalised by the combined sensitivity.
        acquisition: "3d" (one 3D k-space) or "2d" (multi-slice: each slice of axis 0 on its own, independent).
    """

    sigma: float
    acquired: tuple[float, ...] = (1.0, 1.0, 1.0)
    partial_fourier: float = 1.0
    partial_fourier_axis: int = -2
    coils: int = 1
    acquisition: str = "3d"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")
        acquired = tuple(float(a) for a in self.acquired)
        if len(acquired) == 2:
            acquired = (1.0, *acquired)
        if len(acquired) != 3 or not all(0 < a <= 1 for a in acquired):
            raise ValueError(f"acquired must hold 2 or 3 fractions in (0, 1], got {self.acquired}")
        object.__setattr__(self, "acquired", acquired)
        if not 0.5 <= self.partial_fourier <= 1:
            raise ValueError(f"partial_fourier must be in [0.5, 1], got {self.partial_fourier}")
        if self.partial_fourier_axis not in (-3, -2, -1):
            raise ValueError(f"partial_fourier_axis must be -3, -2 or -1, got {self.partial_fourier_axis}")
        if int(self.coils) != self.coils or self.coils < 1:
            raise ValueError(f"coils must be an integer >= 1, got {self.coils}")
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {', '.join(ACQUISITIONS)}, got {self.acquisition!r}")
        if self.acquisition == "2d" and self.partial_fourier_axis == -3 and self.partial_fourier < 1:
            raise ValueError("partial_fourier_axis must be in-plane (-2 or -1) for a 2d acquisition, got -3")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The noisy acquisition (float32)."""
        return self.simulate(image, rng).noisy

    def _axes(self, ndim: int) -> tuple[int, ...]:
        return (-2, -1) if ndim == 2 or self.acquisition == "2d" else (-3, -2, -1)

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Acquired k-space samples (bool, FFT order), broadcastable to the transformed axes of ``shape``."""
        axes = self._axes(len(shape))
        mask = np.ones([1] * len(axes), bool)
        for i, axis in enumerate(axes):
            pf = self.partial_fourier if axis == self.partial_fourier_axis else 1.0
            along = kspace_mask(shape[axis], self.acquired[axis], pf)
            mask = mask & along.reshape([-1 if j == i else 1 for j in range(len(axes))])
        return mask

    def expected_sd(self, shape: tuple[int, ...]) -> np.ndarray:
        """SD of the noise where the signal is strong (Gaussian there), per in-plane position: ``sigma·√(kept
        fraction) / √(Σ_c S_c²)``. float32 ``(H, W)``."""
        kept = float(self.mask(shape).mean())
        combined = np.sqrt((coil_sensitivities(shape[-2:], int(self.coils)) ** 2).sum(axis=0))
        return (self.sigma * math.sqrt(kept) / combined).astype(np.float32)

    def simulate(self, image: np.ndarray, rng: np.random.Generator,
                 context: NoiseContext | None = None) -> NoiseRealisation:
        """Acquires ``image`` in k-space with and without receiver noise.

        Args:
            image: clean magnitude image, ``(H, W)`` or ``(D, H, W)``.
            rng: the random generator.
            context: unused (the acquisition depends on the image alone).

        Returns:
            ``noisy`` and ``clean`` magnitudes (float32); ``sigma`` is the realised SD of their difference and
            ``params["expected_sd"]`` the mean Gaussian SD where the signal is strong.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim not in (2, 3) or min(image.shape) < 1:
            raise ValueError(f"image must be 2D (H, W) or 3D (D, H, W), got shape {image.shape}")
        axes = self._axes(image.ndim)
        mask = self.mask(image.shape)
        spectrum = scipy.fft.fftn(image, axes=axes, norm="ortho", workers=1)
        spectrum *= mask
        acquired = scipy.fft.ifftn(spectrum, axes=axes, norm="ortho", workers=1).astype(np.complex64)
        # Receiver noise on the acquired samples only, independent per coil; with "ortho" FFTs its SD per
        # component is the same in k-space and in the image.
        sens = coil_sensitivities(image.shape[-2:], int(self.coils))
        sampled = np.broadcast_to(mask, image.shape)
        draws = rng.standard_normal((len(sens), 2, int(sampled.sum())), dtype=np.float32) * np.float32(self.sigma)
        noise = np.zeros((len(sens), *image.shape), np.complex64)
        noise[:, sampled] = draws[:, 0] + 1j * draws[:, 1]
        noise = scipy.fft.ifftn(noise, axes=axes, norm="ortho", workers=1, overwrite_x=True)
        if len(sens) == 1:
            noisy = np.abs(acquired + noise[0])
        else:
            # Coil image = sensitivity × the acquired image: the sensitivities vary over the whole field of
            # view, far more slowly than the few-voxel blur of zero-filling, so the order does not matter.
            # Root-sum-of-squares, normalised by the combined sensitivity (as "prescan normalize" does).
            power = np.zeros(image.shape, np.float32)
            for coil, coil_noise in zip(sens, noise):
                power += np.abs(coil * acquired + coil_noise) ** 2
            noisy = np.sqrt(power) / np.sqrt((sens**2).sum(axis=0))
        noisy, clean = noisy.astype(np.float32), np.abs(acquired).astype(np.float32)
        expected = float(self.expected_sd(image.shape).mean())
        return NoiseRealisation(noisy, clean, float(np.std(noisy - clean)), {**asdict(self), "expected_sd": expected})


MR_KSPACE_RANGES = {
    "sigma": LogUniform(0.005, 0.1),
    "acquired": PerAxis((Uniform(0.6, 1.0), Uniform(0.45, 1.0), Uniform(0.45, 1.0))),
    "partial_fourier": Sometimes(0.3, Uniform(0.625, 1.0), 1.0),
    "partial_fourier_axis": Choice((-2, -1)),
    "coils": Choice((1, 1, 4, 8)),
    "acquisition": Choice(ACQUISITIONS),
}
"""Training ranges, in normalised units (the 99.5th percentile of the signal is 1)."""
