"""The network's input: the noisy patch plus a constant channel holding its noise level.

The level is :func:`~MedicalDenoiseLib.noise_estimation.estimate_noise_sigma` of the noisy patch itself, in
normalised units, exactly what the denoiser measures and feeds at inference. The true (drawn) level is used
only to weight the loss, never as input: a model told the true level in training would be told something
else in use.
"""
from __future__ import annotations

import numpy as np
import torch

from MedicalDenoiseLib.noise_estimation import estimate_noise_sigma

__all__ = ["estimate_levels", "network_input"]


def estimate_levels(patches: np.ndarray) -> np.ndarray:
    """Blind noise SD of each patch: ``(B, D, H, W)`` → float32 ``(B,)``."""
    return np.array([estimate_noise_sigma(p) for p in patches], dtype=np.float32)


def network_input(image: torch.Tensor, levels: torch.Tensor, with_level: bool = True) -> torch.Tensor:
    """``(B, 1, D, H, W)`` image and ``(B,)`` levels → ``(B, 2, D, H, W)`` (or the image alone)."""
    if not with_level:
        return image
    return torch.cat([image, levels.to(image.dtype).view(-1, 1, 1, 1, 1).expand_as(image)], dim=1)
