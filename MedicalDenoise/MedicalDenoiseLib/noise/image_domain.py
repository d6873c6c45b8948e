"""Seedable noise models. Each takes an array and a ``numpy.random.Generator`` and returns a new noisy array;
``sigma`` is in the array's own intensity units.

The fixed-parameter models are separate from :class:`RandomNoise`, which draws a model and a level per call
for training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["GaussianNoise", "RicianNoise", "CTQuantumNoise", "SpeckleNoise", "RandomNoise", "NOISE_MODELS", "make_noise"]


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise of standard deviation ``sigma``."""

    sigma: float

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _check_sigma(self.sigma)
        return (image + rng.normal(0.0, sigma, image.shape)).astype(np.float32)


@dataclass(frozen=True)
class RicianNoise:
    """MR magnitude noise: Gaussian noise of ``sigma`` on the real and imaginary channels, then the modulus.

    It biases dark regions upwards (the background becomes Rayleigh-distributed), unlike additive noise.
    """

    sigma: float

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _check_sigma(self.sigma)
        real = image + rng.normal(0.0, sigma, image.shape)
        imag = rng.normal(0.0, sigma, image.shape)
        return np.hypot(real, imag).astype(np.float32)


def _fbp_filtered_noise(shape: tuple[int, ...], rng: np.random.Generator, cutoff: float) -> np.ndarray:
    """Unit-variance noise whose in-plane power spectrum is a ramp times a Gaussian roll-off.

    That is the noise power spectrum of filtered back projection: little power at low frequencies (the
    ramp), a peak at mid frequencies and a fall-off set by the reconstruction kernel, giving the familiar
    fine-grained, spatially correlated CT texture. Slices are independent (axis 0).
    """
    white = rng.standard_normal(shape)
    if len(shape) < 2 or shape[-1] < 2 or shape[-2] < 2:
        return white
    fy = np.fft.fftfreq(shape[-2])[:, None]
    fx = np.fft.rfftfreq(shape[-1])[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    amplitude = np.sqrt(radius * np.exp(-((radius / cutoff) ** 2)))
    noise = np.fft.irfft2(np.fft.rfft2(white, axes=(-2, -1)) * amplitude, s=shape[-2:], axes=(-2, -1))
    std = noise.std()
    return noise / std if std > 0 else white


@dataclass(frozen=True)
class CTQuantumNoise:
    """CT noise after filtered back projection: spatially correlated in-plane, optionally signal-dependent.

    Attributes:
        sigma: standard deviation in soft tissue, in the image's units.
        cutoff: roll-off of the reconstruction kernel in cycles/voxel (0.5 = Nyquist; lower = smoother kernel).
        attenuation_gain: how much more noise dense regions get: the local SD is scaled by
            ``1 + gain * clip(image - reference, 0, None) / scale`` (0 gives stationary noise).
        reference, scale: with ``attenuation_gain``, where the noise equals ``sigma`` and how fast it grows.
    """

    sigma: float
    cutoff: float = 0.35
    attenuation_gain: float = 0.0
    reference: float = 0.0
    scale: float = 1.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _check_sigma(self.sigma)
        noise = _fbp_filtered_noise(image.shape, rng, self.cutoff) * sigma
        if self.attenuation_gain:
            noise = noise * (1.0 + self.attenuation_gain * np.clip(image - self.reference, 0, None) / self.scale)
        return (image + noise).astype(np.float32)


@dataclass(frozen=True)
class SpeckleNoise:
    """Ultrasound-like multiplicative speckle: ``image * (1 + sigma_rel * n)`` with ``n`` smoothly correlated.

    Attributes:
        sigma: standard deviation of the multiplicative factor (relative, e.g. 0.1 for 10 %).
        correlation: Gaussian correlation length of the speckle in voxels (speckle grains span voxels).
    """

    sigma: float
    correlation: float = 0.8

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _check_sigma(self.sigma)
        n = rng.standard_normal(image.shape)
        if self.correlation > 0:
            n = ndimage.gaussian_filter(n, self.correlation)
            std = n.std()
            n = n / std if std > 0 else n
        return (image * (1.0 + sigma * n)).astype(np.float32)


NOISE_MODELS = {"gaussian": GaussianNoise, "rician": RicianNoise, "ct": CTQuantumNoise, "speckle": SpeckleNoise}


def make_noise(kind: str, sigma: float):
    """The fixed noise model ``kind`` at level ``sigma``.

    Raises:
        ValueError: for an unknown kind, listing the valid ones.
    """
    if kind not in NOISE_MODELS:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODELS)}, got {kind!r}")
    return NOISE_MODELS[kind](sigma)


@dataclass(frozen=True)
class RandomNoise:
    """Draws a noise model and a level per call, for training.

    Attributes:
        kinds: noise model names to choose from, uniformly.
        sigma_range: (low, high) of the level, drawn log-uniformly so low noise is sampled as often as high.
        relative_to: levels are fractions of this value (the normalised intensity range, usually 1).
    """

    kinds: tuple[str, ...] = ("gaussian", "rician", "ct")
    sigma_range: tuple[float, float] = (0.005, 0.15)
    relative_to: float = 1.0

    def draw(self, rng: np.random.Generator):
        kind = self.kinds[rng.integers(len(self.kinds))]
        low, high = self.sigma_range
        sigma = float(np.exp(rng.uniform(np.log(low), np.log(high)))) * self.relative_to
        if kind == "speckle":
            # Speckle is multiplicative: its level is relative to the signal, not to the range.
            return SpeckleNoise(sigma / self.relative_to * 2.0), sigma
        if kind == "ct":
            return CTQuantumNoise(sigma, cutoff=float(rng.uniform(0.25, 0.5))), sigma
        return make_noise(kind, sigma), sigma

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Returns the noisy image and the level drawn."""
        model, sigma = self.draw(rng)
        return model(image, rng), sigma
