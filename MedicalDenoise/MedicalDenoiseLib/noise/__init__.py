"""Noise models: what the networks learn to remove and what the benchmarks add to clean images.

Each model is a small seedable callable ``model(image, rng) -> noisy``; physics models also have
``simulate(image, rng, context)`` returning a :class:`NoiseRealisation` (noisy, clean target, realised SD,
parameters). :data:`NOISE_KINDS` names every model with the ranges training draws its parameters from.
See docs/noise-physics.md.
"""
from __future__ import annotations

from .ct_projection import CTProjectionNoise
from .ct_sinograms import SliceSinograms
from .image_domain import (NOISE_MODELS, CTQuantumNoise, GaussianNoise, RandomNoise, RicianNoise, SpeckleNoise,
                           make_noise)
from .kinds import NOISE_KINDS, NoiseKind, kinds_for_modality, noise_kind
from .mr_kspace import MRKSpaceNoise
from .random_model import RandomNoiseModel
from .realisation import NoiseContext, NoiseRealisation, realise
from .ultrasound_speckle import UltrasoundSpeckle

__all__ = [
    "GaussianNoise", "RicianNoise", "CTQuantumNoise", "SpeckleNoise", "RandomNoise", "NOISE_MODELS", "make_noise",
    "CTProjectionNoise", "SliceSinograms", "MRKSpaceNoise", "UltrasoundSpeckle",
    "NoiseContext", "NoiseRealisation", "realise", "RandomNoiseModel",
    "NoiseKind", "NOISE_KINDS", "noise_kind", "kinds_for_modality",
]
