"""How the noise correlates between neighbouring voxels, measured in the residuals of flat patches.

The residual of a patch after a quadratic fit is noise with its slowest part removed: the fit takes out
what looks like a smooth trend, and with it some of the noise when the noise is correlated over several
voxels (zero-filled MR, speckle, smooth CT kernels). The residuals' autocovariance is therefore the noise
autocovariance seen through that projection, a known linear map. Inverting it gives the noise
autocorrelation itself, from which follow the fraction of the noise the fit removed (to add back), how many
independent samples a patch is worth (for the spread of patch variances), and the lag-1 correlations.

One direction cannot be inverted: noise common to a whole patch, which the fit removes entirely. Left out, it
pulls the far lags of the kernel below zero when the noise is correlated beyond the patch (log-compressed
speckle from few scatterers varies over tens of voxels). Noise correlation does not stay negative over many
voxels, so when the residuals are known to be noise that component can be put back until the outer lags
average zero; how far below zero they were is reported either way. (Smooth structure left in the residuals of
real images pulls the far lags down too: there it must not be read as noise.)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .flat_patches import FlatPatches, polynomial_basis

__all__ = ["NoiseCorrelation", "measure_correlation", "through_plane_correlation"]

_RCOND = 0.03
_MAX_LAG = 8  # lags measured: the kernel of a 16-voxel patch; wider patches keep the map small and fast
_OUTER_LAGS = (5.0, 8.0)  # radius range whose mean correlation is taken as zero when it falls below
_FINE_FILTER = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0])
# Σ_p f(p) f(p + d) over the 5×5 lags d: the filtered variance is Σ_d of this times the noise covariance.
_FINE_FILTER_AUTOCORRELATION = np.array([[np.sum(_FINE_FILTER[max(0, dy):3 + min(0, dy), max(0, dx):3 + min(0, dx)]
                                                  * _FINE_FILTER[max(0, -dy):3 + min(0, -dy), max(0, -dx):3 + min(0, -dx)])
                                           for dx in range(-2, 3)] for dy in range(-2, 3)])


@dataclass(frozen=True)
class NoiseCorrelation:
    """In-plane correlation of the noise.

    Attributes:
        kernel: ``(2L+1, 2L+1)`` autocorrelation over in-plane lags ``(dy, dx)`` in ``[−L, L]``, 1 at the
            centre.
        fit_loss: fraction of the noise variance that a quadratic fit to one patch removes.
        effective_samples: how many independent voxels a patch's variance is worth.
        beyond_patch: how far below zero the outer lags fell (near 0 unless the noise, or structure left in
            the residuals, is correlated beyond the patch).
    """

    kernel: np.ndarray
    fit_loss: float
    effective_samples: float
    beyond_patch: float = 0.0

    @property
    def sd_per_fine_sd(self) -> float:
        """Full noise SD over its fine-scale part (the ``[1, −2, 1] ⊗ [1, −2, 1]`` filtered SD): 1 for white
        noise, larger as the grain widens."""
        c = self.kernel.shape[0] // 2
        around = self.kernel[c - 2:c + 3, c - 2:c + 3]
        fine_fraction = float((_FINE_FILTER_AUTOCORRELATION * around).sum()) / 36.0
        return 1.0 / np.sqrt(max(fine_fraction, 1e-3))

    @property
    def lag1(self) -> tuple[float, float]:
        """Correlation of in-plane neighbours along y and along x."""
        c = self.kernel.shape[0] // 2
        return float(self.kernel[c + 1, c]), float(self.kernel[c, c + 1])


def _shifted(basis: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[k, y, x] = basis[k, y + dy, x + dx]``, zero where that falls outside the patch."""
    size = basis.shape[-1]
    out = np.zeros_like(basis)
    ys, xs = slice(max(0, -dy), min(size, size - dy)), slice(max(0, -dx), min(size, size - dx))
    out[:, ys, xs] = basis[:, ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx]
    return out


@lru_cache(maxsize=4)
def _fit_operator(size: int, max_lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The map from a noise autocovariance to the autocovariance of its quadratic-fit residuals.

    With ``D_d`` the pairs of voxels ``d`` apart and ``H`` the projection onto the fit, the residual
    autocovariance at lag ``e`` is ``Σ_d K(d) tr(D_eᵀ (I−H) D_d (I−H)) / #pairs(e)``; each trace reduces to
    inner products of the shifted basis (``H`` has rank 6), so no ``P² × P²`` matrix is formed.

    The fit removes a patch's mean completely, so nothing in the residuals tells how much noise is common to
    a whole patch: the inverse leaves that direction (the smallest singular values) out rather than guess it,
    or residual shading of real images would be read as noise correlated over the whole patch.

    Returns:
        ``(inverse, traces, common)``: the ``(m, m)`` pseudo-inverse of the map, ``m = (2L+1)²`` lags in
        row-major ``(dy, dx)`` order; ``tr(Qᵀ D_d Q)`` per lag (for the variance the fit removes); and the
        ``(2L+1, 2L+1)`` kernel the map nearly loses (a broad bump, positive), which the inverse leaves out.
    """
    basis = polynomial_basis(size)
    lags = [(dy, dx) for dy in range(-max_lag, max_lag + 1) for dx in range(-max_lag, max_lag + 1)]
    forward = np.stack([_shifted(basis, dy, dx) for dy, dx in lags])  # D_d Q
    backward = forward[::-1]  # D_dᵀ Q = D_{−d} Q: the lag list is symmetric about its centre
    projected = np.einsum("lij,dkij->dlk", basis, forward)  # Qᵀ D_d Q
    pairs = np.array([(size - abs(dy)) * (size - abs(dx)) for dy, dx in lags], dtype=np.float64)
    flat = lambda a: a.reshape(len(lags), -1)  # noqa: E731
    traces = (np.diag(pairs) - flat(backward) @ flat(backward).T - flat(forward) @ flat(forward).T
              + flat(projected) @ flat(projected).T)
    forward_map = traces / pairs[:, None]
    inverse = np.linalg.pinv(forward_map, rcond=_RCOND)
    common = np.linalg.svd(forward_map)[2][-1]
    common = (common * np.sign(common.sum())).reshape(2 * max_lag + 1, 2 * max_lag + 1)
    return inverse, np.einsum("dkk->d", projected), common


def _residual_autocovariance(residuals: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean ``r(p) r(p + d)`` over all voxel pairs of all patches, for in-plane lags up to ``max_lag``."""
    size = residuals.shape[-1]
    spectrum = np.fft.rfft2(residuals, s=(2 * size, 2 * size))
    sums = np.fft.irfft2((spectrum.real**2 + spectrum.imag**2).sum(axis=0), s=(2 * size, 2 * size))
    sums = np.fft.fftshift(sums)[size - max_lag:size + max_lag + 1, size - max_lag:size + max_lag + 1]
    lag = np.arange(-max_lag, max_lag + 1)
    pairs = np.outer(size - np.abs(lag), size - np.abs(lag))
    return sums / (pairs * len(residuals))


def measure_correlation(residuals: np.ndarray, beyond_patch: bool = False) -> NoiseCorrelation:
    """The noise correlation from quadratic-fit residuals of flat patches.

    Args:
        residuals: ``(M, P, P)`` residuals (:attr:`FlatPatches.residuals`).
        beyond_patch: the residuals are noise: put back the patch-common component that the outer lags'
            deficit shows.

    Returns:
        The correlation; white (a single 1) when the residuals carry no variance.
    """
    size = residuals.shape[-1]
    max_lag = min(size // 2, _MAX_LAG)
    inverse, traces, common = _fit_operator(size, max_lag)
    measured = _residual_autocovariance(residuals, max_lag)
    kernel = (inverse @ measured.ravel()).reshape(measured.shape)
    kernel = 0.5 * (kernel + kernel[::-1, ::-1])
    centre = kernel[max_lag, max_lag]
    if not np.isfinite(centre) or centre <= 0:
        kernel = np.zeros_like(measured)
        kernel[max_lag, max_lag] = centre = 1.0
    lag = np.arange(-max_lag, max_lag + 1)
    radius = np.hypot(lag[:, None], lag[None, :])
    outer = (radius >= _OUTER_LAGS[0]) & (radius <= _OUTER_LAGS[1])
    beyond = 0.0
    if outer.any() and common[outer].mean() > 0:
        beyond = float(max(-kernel[outer].mean() / centre, 0.0))
        if beyond_patch:
            kernel = kernel + beyond * centre / common[outer].mean() * common
    kernel = kernel / kernel[max_lag, max_lag]
    voxels = size * size
    fit_loss = float(np.clip(traces @ kernel.ravel() / voxels, 0.0, 0.9))
    effective = float(np.clip(voxels / (kernel**2).sum(), 1.0, voxels))
    return NoiseCorrelation(kernel, fit_loss, effective, beyond)


def through_plane_correlation(volume: np.ndarray, flat: FlatPatches) -> float | None:
    """Correlation of the noise between neighbouring slices, from the flat patches and the same patches one
    slice further (residuals of the quadratic fit in both, pooled over patches).

    Args:
        volume: the ``(D, H, W)`` input.
        flat: its flat patches.

    Returns:
        The lag-1 correlation along axis 0 of the fit residuals, or None for a single slice.
    """
    if volume.shape[0] < 2 or len(flat.corners) == 0:
        return None
    size = flat.size
    basis = polynomial_basis(size)
    corners = flat.corners
    step = np.where(corners[:, 0] + 1 < volume.shape[0], 1, -1)  # the last slice pairs with the one before
    there = np.stack([volume[z + dz, y:y + size, x:x + size] for (z, y, x), dz in zip(corners, step)])
    there = there.astype(np.float64)
    good = np.isfinite(there).all(axis=(1, 2))
    if not good.any():
        return None
    here, there = flat.residuals[good], there[good]
    there = there - np.einsum("nk,kij->nij", np.einsum("nij,kij->nk", there, basis), basis)
    denominator = np.sqrt((here**2).sum() * (there**2).sum())
    return float((here * there).sum() / denominator) if denominator > 0 else None
