"""The noise level each training patch is conditioned on.

The level is what the denoiser measures and feeds at inference, in normalised units: the full noise SD
(:func:`~MedicalDenoiseLib.estimation.noise_estimation.estimate_noise_sigma`) for new models, or the
high-pass estimate for a run that fine-tunes a model trained on that scale (its card's ``conditioning``:
"fine-scale-sd"), so that the level means to the network what it meant before. The true (drawn) level is used
only to weight the loss, never as input: a model told the true level in training would be told something
else in use. The network builds its conditioning channel from this number (``network(x, sigma)``); a blind
network needs none, and its patches skip the estimate.
"""
from __future__ import annotations

import numpy as np

from MedicalDenoiseLib.estimation.noise_estimation import estimate_fine_scale_sigma, estimate_noise_sigma
from MedicalDenoiseLib.inference.strength import CONDITIONING

__all__ = ["estimate_levels", "run_conditioning", "NO_LEVEL"]

#: The conditioning of a blind network: no level is estimated.
NO_LEVEL = None

_ESTIMATORS = {"noise-sd": estimate_noise_sigma, "fine-scale-sd": estimate_fine_scale_sigma}


def run_conditioning(level_input: bool, init_conditioning: str | None, sublattice: tuple[int, ...]) -> str | None:
    """The level a run's network is told: none when blind; the full SD on sub-lattices (the denoiser tells each
    sub-lattice the whole image's full-SD estimate, since there the grain is white and its finest scale holds all
    of it); else the started-from model's scale, so that the level keeps its meaning."""
    if not level_input:
        return NO_LEVEL
    if max(sublattice) > 1:
        return "noise-sd"
    return init_conditioning or "noise-sd"


def estimate_levels(patches: np.ndarray, conditioning: str | None = "noise-sd") -> np.ndarray:
    """Blind noise level of each patch: ``(B, D, H, W)`` → float32 ``(B,)`` (zeros for a blind network).

    Raises:
        ValueError: for an unknown ``conditioning``, listing the valid ones.
    """
    if conditioning is NO_LEVEL:
        return np.zeros(len(patches), dtype=np.float32)
    if conditioning not in _ESTIMATORS:
        raise ValueError(f"conditioning must be one of {', '.join(CONDITIONING)}, got {conditioning!r}")
    estimate = _ESTIMATORS[conditioning]
    return np.array([estimate(p) for p in patches], dtype=np.float32)
