"""MR magnitude statistics: in a dark region the spread of a magnitude image understates its noise.

A magnitude image from one coil is ``|signal + complex Gaussian noise of SD σ per channel|``. Where the signal
is several σ above zero its noise is Gaussian with SD σ; closer to zero the distribution is Rician (Rayleigh
with no signal at all) and its variance is only ``ξ·σ²`` with ``0.43 ≤ ξ ≤ 1``. Koay & Basser (J. Magn.
Reson. 179:317, 2006) give ξ as a function of the true signal-to-noise ratio θ; here it is looked up from what
a region shows, the ratio of its mean to its standard deviation.

A root-sum-of-squares combination of L coils is non-central chi with ``k = 2L`` degrees of freedom: its
mean is ``σ·√2·Γ((k+1)/2)/Γ(k/2)·₁F₁(−½; k/2; −θ²/2)`` and its second moment ``σ²(θ² + k)``, so ξ stays below
1 up to a far higher signal (about 0.8 at θ = 5 for 8 coils) and pure background has a mean/SD of 1.91 for
one coil, 5.6 for eight (Constantinides et al., MRM 38:852, 1997).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import gammaln, hyp1f1

__all__ = ["RAYLEIGH_MEAN_TO_SD", "rician_variance_factor", "background_mean_to_sd", "background_skewness",
           "background_dof", "MAX_DOF"]

_THETA = np.linspace(0.0, 60.0, 6001)  # true SNR (signal / σ); beyond it the noise is Gaussian to 1e-4
MAX_DOF = 32.0  # 16 coils: a dark region that looks like more is dim tissue or speckle, not background
_DOF_GRID = np.geomspace(2.0, MAX_DOF, 200)


def _chi_mean(dof: np.ndarray | float, theta: np.ndarray | float) -> np.ndarray:
    """E[M]/σ of non-central chi with ``dof`` degrees of freedom at signal ``theta`` (in units of σ)."""
    dof = np.asarray(dof, dtype=np.float64)
    scale = np.sqrt(2.0) * np.exp(gammaln((dof + 1) / 2) - gammaln(dof / 2))
    return scale * hyp1f1(-0.5, dof / 2, -np.asarray(theta, dtype=np.float64) ** 2 / 2)


@lru_cache(maxsize=16)
def _table(dof: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mean/SD, ξ)`` over ``_THETA`` for ``dof`` degrees of freedom; mean/SD made non-decreasing."""
    mean = _chi_mean(dof, _THETA)
    xi = np.maximum(_THETA**2 + dof - mean**2, 1e-12)
    mean_to_sd = np.maximum.accumulate(mean / np.sqrt(xi))
    return mean_to_sd, xi


#: Mean over standard deviation of pure Rayleigh noise (no signal): regions near it hold background only.
RAYLEIGH_MEAN_TO_SD = float(_table(2.0)[0][0])


def rician_variance_factor(mean_to_sd: np.ndarray, dof: float = 2.0) -> np.ndarray:
    """ξ, the variance of a magnitude region over the σ² of its complex noise, from its mean/SD ratio.

    Args:
        mean_to_sd: the measured mean over standard deviation of each region (any shape).
        dof: degrees of freedom of the magnitude, twice the number of coils combined (2: Rician).

    Returns:
        ξ in ``(0, 1]``, same shape; ratios at or below pure background's give its ξ (0.429 for one coil),
        high ones 1.
    """
    table_mean_to_sd, xi = _table(float(round(dof, 3)))
    return np.interp(np.asarray(mean_to_sd, dtype=np.float64), table_mean_to_sd, xi, left=xi[0], right=1.0)


def background_mean_to_sd(dof: np.ndarray | float) -> np.ndarray:
    """Mean over SD of pure background (central chi) with ``dof`` degrees of freedom: 1.91 for 2."""
    mean = _chi_mean(dof, 0.0)
    return mean / np.sqrt(np.asarray(dof, dtype=np.float64) - mean**2)


def background_skewness(dof: float) -> float:
    """Skewness of pure background (central chi) with ``dof`` degrees of freedom: 0.63 for 2, 0.18 for 16.
    Gaussian noise about a signal, which can show the same mean/SD, has none."""
    mean = float(_chi_mean(dof, 0.0))
    third = 2.0**1.5 * float(np.exp(gammaln((dof + 3) / 2) - gammaln(dof / 2)))
    variance = dof - mean**2
    return (third - 3.0 * mean * variance - mean**3) / variance**1.5


def background_dof(mean_to_sd: float) -> float | None:
    """Degrees of freedom of central chi noise with this mean/SD (2 at the Rayleigh value or a little below);
    None when the ratio fits no background of 1 to 16 coils."""
    ratios = background_mean_to_sd(_DOF_GRID)
    if not 0.9 * ratios[0] <= mean_to_sd <= ratios[-1]:
        return None
    return float(np.interp(mean_to_sd, ratios, _DOF_GRID))
