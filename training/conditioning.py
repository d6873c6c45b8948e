"""The noise level each training patch is conditioned on.

The level is :func:`~MedicalDenoiseLib.inference.noise_estimation.estimate_noise_sigma` of the noisy patch itself, in
normalised units, exactly what the denoiser measures and feeds at inference. The true (drawn) level is used
only to weight the loss, never as input: a model told the true level in training would be told something
else in use. The network builds its conditioning channel from this number (``network(x, sigma)``).
"""
from __future__ import annotations

import numpy as np

from MedicalDenoiseLib.inference.noise_estimation import estimate_noise_sigma

__all__ = ["estimate_levels"]


def estimate_levels(patches: np.ndarray) -> np.ndarray:
    """Blind noise SD of each patch: ``(B, D, H, W)`` → float32 ``(B,)``."""
    return np.array([estimate_noise_sigma(p) for p in patches], dtype=np.float32)
