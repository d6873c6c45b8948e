"""The background of an MR magnitude image: air, where the signal is zero and the image is pure noise.

There a magnitude image is ``|complex Gaussian noise|``: Rayleigh for one coil, central chi with ``k = 2L``
degrees of freedom for L coils combined by root-sum-of-squares (normalised by the combined sensitivity, as
prescan-normalised images are). Its scale σ is the SD of the Gaussian noise where the signal is strong, at
that place. Unlike tissue, background holds no anatomy: it shows the noise where the object is too
structured to (a 1 mm brain has no flat 16×16 patch at a few per cent of noise) or where Gibbs ringing of
zero-filled k-space covers it.

The background is the flat patches among the darkest (by mean), when they are chi distributed: their
mean/SD gives k, and their skewness must be the positive one of that chi (Gaussian noise about a dim signal
can show the same mean/SD but no skew; log-compressed speckle skews the other way). Patches that straddle
the object's edge are neither flat nor chi-like. Then ``σ² = E[M²]/k``, which correlation between voxels
does not bias.

Scanners often store a background quieter than the noise in the object (noise-floor suppression, filtering,
quantisation to a few grey levels): then the finest-scale detail of the object, which noise raises whatever
the anatomy, is far above what noise of the background's level would give, and the background is not used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .flat_patches import PatchCandidates
from .rician import (MAX_DOF, RAYLEIGH_MEAN_TO_SD, background_dof, background_mean_to_sd, background_skewness,
                     rician_variance_factor)

__all__ = ["Background", "find_background", "with_background"]

_DARKEST = 0.02  # quantile of the patch means that sets the background's level …
_DARK_FACTOR = 1.5  # … patches up to this factor above it may be background,
_FLATTEST = 0.05  # those whose structure is within a factor of the flattest of them …
_STRUCTURE_FACTOR = 4.0
_MIN_PATCHES = 12  # … when at least this many remain,
_MIN_SHARE = 0.01  # and this share of all patches,
_BRIGHT = 0.95  # and their mean is under a fraction of this quantile of the patch means (the object's) …
_MAX_LEVEL = 0.6  # … this fraction.
_SKEW_RANGE = (0.5, 2.5)  # median skewness over the chi's: a looser match is not a chi background
# The object's fine-scale SD over what the background's noise would give in it, at most: simulated
# acquisitions show 0.5-1.3, real scans with a suppressed or quantised background 2-9 (the real scans in
# ../shared/data at 1.2-1.4 keep their tissue's estimate, which reads below 1.05× the background's).
_MAX_FINE_RATIO = 1.5
# Tissue over background SD ratios between which the estimate moves from the tissue's to the background's
# (log-linearly). With one coil the noise is the same everywhere, so tissue reading higher is structure;
# RSS-combined coils leave the background, near the coils, quieter than the middle of the object.
_SWITCH_ONE_COIL = (1.05, 1.15)
_SWITCH_COILS = (1.5, 2.0)


@dataclass(frozen=True)
class Background:
    """Pure-noise background found in a magnitude image.

    Attributes:
        sd: σ, the Gaussian noise SD per channel (the noise SD where the signal is strong).
        dof: degrees of freedom of the chi distribution, twice the number of coils combined.
        patches: how many patches it rests on.
    """

    sd: float
    dof: float
    patches: int


def find_background(candidates: PatchCandidates) -> Background | None:
    """The pure-noise background among the candidate patches of a magnitude image.

    Args:
        candidates: from :func:`~MedicalDenoiseLib.estimation.flat_patches.measure_patches`.

    Returns:
        The background, or None when the image has none that is clearly chi distributed.
    """
    if candidates.mean_square is None or candidates.mean.size < _MIN_PATCHES:
        return None
    mean = candidates.mean
    floor = float(np.quantile(mean, _DARKEST))
    dark = np.flatnonzero(mean <= _DARK_FACTOR * floor)
    if floor <= 0 or dark.size < _MIN_PATCHES:
        return None
    structure = candidates.structure[dark]
    rank = max(4, int(_FLATTEST * dark.size))
    dark = dark[structure <= _STRUCTURE_FACTOR * np.partition(structure, rank)[rank]]
    m, square, cube = mean[dark], candidates.mean_square[dark], candidates.mean_cube[dark]
    variance = np.maximum(square - m**2, 1e-300)
    mean_to_sd = m / np.sqrt(variance)
    skewness = (cube - 3.0 * m * variance - m**3) / variance**1.5
    chi_like = ((mean_to_sd >= 0.9 * RAYLEIGH_MEAN_TO_SD) & (mean_to_sd <= background_mean_to_sd(MAX_DOF))
                & (skewness > 0))
    dark = dark[chi_like]
    if dark.size < max(_MIN_PATCHES, _MIN_SHARE * mean.size):
        return None
    if np.median(mean[dark]) > _MAX_LEVEL * np.quantile(mean, _BRIGHT):
        return None
    dof = background_dof(float(np.median(mean_to_sd[chi_like])))
    if dof is None:
        return None
    skew = float(np.median(skewness[chi_like])) / background_skewness(dof)
    if not _SKEW_RANGE[0] <= skew <= _SKEW_RANGE[1]:
        return None
    # Fine-scale SD of the noise in the object, were it the background's: magnitude noise at zero signal has
    # ξ₀ of the variance it has under strong signal.
    expected_fine = np.median(candidates.fine_sd[dark]) / np.sqrt(rician_variance_factor(0.0, dof))
    bright = mean >= 0.5 * np.quantile(mean, _BRIGHT)
    if np.median(candidates.fine_sd[bright]) > _MAX_FINE_RATIO * expected_fine:
        return None
    return Background(float(np.sqrt(np.median(square[chi_like]) / dof)), dof, int(dark.size))


def with_background(tissue_sd: float, background: Background) -> float:
    """The noise SD given the tissue's flat-patch estimate and the background's.

    Tissue reading far above the background means its flattest patches still hold anatomy or ringing; the
    background's σ is then the better measure. Otherwise the tissue's is kept: it is where the noise
    matters, and ghosting or ringing in the air only raise the background's.
    """
    if tissue_sd <= 0 or background.sd <= 0:
        return tissue_sd
    low, high = _SWITCH_ONE_COIL if background.dof < 3.0 else _SWITCH_COILS
    weight = float(np.clip(np.log(tissue_sd / (low * background.sd)) / np.log(high / low), 0.0, 1.0))
    return float(np.exp((1.0 - weight) * np.log(tissue_sd) + weight * np.log(background.sd)))
