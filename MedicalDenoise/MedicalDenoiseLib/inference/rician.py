"""MR magnitude statistics: in a dark region the spread of a magnitude image understates its noise.

A magnitude image is ``|signal + complex Gaussian noise of SD σ per channel|``. Where the signal is several
σ above zero its noise is Gaussian with SD σ; closer to zero the distribution is Rician (Rayleigh with no
signal at all) and its variance is only ``ξ·σ²`` with ``0.43 ≤ ξ ≤ 1``. Koay & Basser (J. Magn. Reson.
179:317, 2006) give ξ as a function of the true signal-to-noise ratio θ; here it is looked up from what a
region shows, the ratio of its mean to its standard deviation.
"""
from __future__ import annotations

import numpy as np
from scipy.special import i0e, i1e

__all__ = ["RAYLEIGH_MEAN_TO_SD", "rician_variance_factor"]

_THETA = np.linspace(0.0, 40.0, 4001)  # true SNR (signal / σ); beyond 40 the noise is Gaussian to 1e-4
_Z = _THETA**2 / 4
# i0e/i1e carry the exp(-θ²/4) factor that keeps the Bessel functions finite at high SNR.
_XI = 2 + _THETA**2 - np.pi / 8 * ((2 + _THETA**2) * i0e(_Z) + _THETA**2 * i1e(_Z)) ** 2
_MEAN = np.sqrt(np.pi / 2) * ((1 + _THETA**2 / 2) * i0e(_Z) + _THETA**2 / 2 * i1e(_Z))  # E[M] / σ
_MEAN_TO_SD = _MEAN / np.sqrt(_XI)  # increasing in θ, from 1.913 (Rayleigh) upwards

#: Mean over standard deviation of pure Rayleigh noise (no signal): regions near it hold background only.
RAYLEIGH_MEAN_TO_SD = float(_MEAN_TO_SD[0])


def rician_variance_factor(mean_to_sd: np.ndarray) -> np.ndarray:
    """ξ, the variance of a magnitude region over the σ² of its complex noise, from its mean/SD ratio.

    Args:
        mean_to_sd: the measured mean over standard deviation of each region (any shape).

    Returns:
        ξ in ``[0.429, 1]``, same shape; ratios at or below the Rayleigh value give 0.429, high ones 1.
    """
    return np.interp(np.asarray(mean_to_sd, dtype=np.float64), _MEAN_TO_SD, _XI, left=_XI[0], right=1.0)
