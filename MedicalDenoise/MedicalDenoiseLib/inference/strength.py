"""What the user's strength means to the network.

A strength is ``auto`` (the noise the image holds, as estimated), a named scale of it (``mild``,
``standard``, ``strong``) or the noise SD in the image's own units. Whatever the model, the contract is the
same: passing the SD that ``auto`` estimated gives exactly the ``auto`` result, so ``--strength 25`` on a CT
means "noise of 25 HU" for every model.

- A model conditioned on the noise level is told the level on the scale it was trained with: the full SD,
  or, for models trained before the full-SD estimate existed, the high-pass (finest-scale) estimate. A user
  SD ``s`` becomes that scale's level times ``s / estimated SD``.
- A blind model cannot be told a level: the strength scales how much of what it removes is removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["STRENGTHS", "CONDITIONING", "NetworkSettings", "parse_strength", "network_settings"]

# Named strengths scale the estimated noise.
STRENGTHS = {"mild": 0.6, "standard": 1.0, "strong": 1.6}
# What a conditioned model's level channel holds (ModelCard.conditioning).
CONDITIONING = ("noise-sd", "fine-scale-sd")
# A blind model's removal is scaled at most this much: beyond it, it would subtract structure it never saw.
_MAX_BLEND = 1.6


def parse_strength(value: str | float) -> str | float:
    """``auto``, a named strength, or a noise SD in the image's units (a number >= 0).

    Raises:
        ValueError: naming the valid choices.
    """
    if isinstance(value, (int, float)):
        number = float(value)
    elif str(value).lower() in ("auto", *STRENGTHS):
        return str(value).lower()
    else:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"strength must be auto, {', '.join(STRENGTHS)} or a noise SD >= 0, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"strength must be auto, {', '.join(STRENGTHS)} or a noise SD >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class NetworkSettings:
    """How one image is denoised.

    Attributes:
        level: the noise level told to a conditioned network (normalised units); None for a blind one.
        blend: the fraction of what the network removes that is removed (1 for conditioned networks).
        used_sd: the noise SD the strength stands for, in normalised units (the estimate for ``auto``).
    """

    level: float | None
    blend: float
    used_sd: float


def network_settings(strength: str | float, estimated_sd: float, fine_scale_sd: float, scale: float,
                     conditioned: bool, conditioning: str = "noise-sd") -> NetworkSettings:
    """The settings for an image whose noise was estimated.

    Args:
        strength: from :func:`parse_strength`.
        estimated_sd: the full noise SD estimate, normalised units.
        fine_scale_sd: the high-pass estimate, normalised units.
        scale: image units per normalised unit (a user SD is divided by it).
        conditioned: whether the network takes a noise level.
        conditioning: what its level channel holds, one of ``CONDITIONING``.

    Raises:
        ValueError: for an unknown ``conditioning``.
    """
    if conditioning not in CONDITIONING:
        raise ValueError(f"conditioning must be one of {', '.join(CONDITIONING)}, got {conditioning!r}")
    if isinstance(strength, float):
        used = strength / scale
        factor = used / estimated_sd if estimated_sd > 0 else None
    else:
        factor = STRENGTHS.get(strength, 1.0)
        used = estimated_sd * factor
    if not conditioned:
        return NetworkSettings(None, 1.0 if factor is None else float(min(factor, _MAX_BLEND)), used)
    reference = fine_scale_sd if conditioning == "fine-scale-sd" else estimated_sd
    # Without a measurable noise the scales cannot be related: the user's SD is told as it is.
    level = used if factor is None else reference * factor
    return NetworkSettings(float(level), 1.0, used)
