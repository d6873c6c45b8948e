"""The noise kinds training can draw from, in one place: name → fixed-parameter model, training ranges of its
parameters, and the modalities it is meant for.

Physics kinds ("ct-projection", "mr-kspace", "us-speckle") change the clean image too (an MR acquisition
blurs, a B-mode image is log-compressed), so train on ``kind.random().simulate(patch, rng, context)``, whose
``clean`` is the target, not on the input patch. Ranges are in the library's normalised units (CT: air 0,
water 0.5; MR and ultrasound: the 99.5th percentile of the signal is 1).

Example:
    >>> kind = noise_kind("mr-kspace")
    >>> result = kind.random().simulate(patch, rng)   # result.noisy, result.clean, result.sigma, result.params
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..inference.normalization import MODALITIES, IntensityNormalizer
from .ct_projection import CT_PROJECTION_RANGES, CTProjectionNoise
from .image_domain import CTQuantumNoise, GaussianNoise, RicianNoise, SpeckleNoise
from .mr_kspace import MR_KSPACE_RANGES, MRKSpaceNoise
from .parameter_ranges import LogUniform, Uniform
from .random_model import RandomNoiseModel
from .ultrasound_speckle import ULTRASOUND_SPECKLE_RANGES, UltrasoundSpeckle

__all__ = ["NoiseKind", "NOISE_KINDS", "noise_kind", "kinds_for_modality"]

_CT = IntensityNormalizer.fit(np.zeros(1, np.float32), "ct")  # HU = offset + scale · normalised value
_WHITE_SIGMA = LogUniform(0.005, 0.15)  # as RandomNoise's default sigma_range


@dataclass(frozen=True)
class NoiseKind:
    """One noise kind.

    Attributes:
        name: the kind's name, as training configs list it.
        model: the fixed-parameter model class; ``model(**params)`` is a ``model(image, rng)`` callable.
        ranges: training distribution of each drawn parameter (or a fixed value).
        modalities: the modalities it is meant for ("ct", "mr", "us").
        summary: one line on what it reproduces.
    """

    name: str
    model: Callable[..., Any]
    ranges: Mapping[str, Any]
    modalities: tuple[str, ...]
    summary: str = field(default="", compare=False)

    def fixed(self, **params: Any) -> Any:
        """The fixed-parameter model with ``params`` (the rest at the model's defaults)."""
        return self.model(**params)

    def random(self, **overrides: Any) -> RandomNoiseModel:
        """A model drawing its parameters from ``ranges``; ``overrides`` replace ranges or fix parameters."""
        return RandomNoiseModel(self.model, {**self.ranges, **overrides}, self.name)


NOISE_KINDS: dict[str, NoiseKind] = {kind.name: kind for kind in (
    NoiseKind("gaussian", GaussianNoise, {"sigma": _WHITE_SIGMA}, MODALITIES, "additive white Gaussian noise"),
    NoiseKind("rician", RicianNoise, {"sigma": _WHITE_SIGMA}, ("mr",),
              "white complex noise, magnitude: MR at full sampling with one coil"),
    NoiseKind("ct", CTQuantumNoise, {"sigma": _WHITE_SIGMA, "cutoff": Uniform(0.25, 0.5)}, ("ct",),
              "fast stationary noise with an FBP-like (ramp × roll-off) power spectrum"),
    NoiseKind("speckle", SpeckleNoise, {"sigma": LogUniform(0.01, 0.3)}, ("us",),
              "fast multiplicative, smoothly correlated noise"),
    NoiseKind("ct-projection", CTProjectionNoise,
              {**CT_PROJECTION_RANGES, "hu_offset": _CT.offset, "hu_per_unit": _CT.scale}, ("ct",),
              "reduced-dose CT: Poisson + electronic counts, log, filtered back projection (Yu et al. 2012)"),
    NoiseKind("mr-kspace", MRKSpaceNoise, MR_KSPACE_RANGES, ("mr",),
              "k-space acquisition: zero-filling, partial Fourier, RSS coils, magnitude"),
    NoiseKind("us-speckle", UltrasoundSpeckle, ULTRASOUND_SPECKLE_RANGES, ("us",),
              "speckle: envelope of PSF-blurred scatterers, log-compressed"),
)}


def noise_kind(name: str) -> NoiseKind:
    """The kind called ``name``.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, got {name!r}")
    return NOISE_KINDS[name]


def kinds_for_modality(modality: str) -> tuple[str, ...]:
    """Names of the kinds meant for ``modality``, in registry order.

    Raises:
        ValueError: for an unknown modality, listing the valid ones.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    return tuple(name for name, kind in NOISE_KINDS.items() if modality in kind.modalities)
