"""The flat parts of an image: small in-plane patches where, after removing a smooth trend, what is left is
noise.

Each slice is cut into square tiles; a patch is a 2×2 block of tiles, taken at every tile step. For every
patch the estimator needs two things that must not depend on each other through the noise:

* its **variance**: what is left after fitting a quadratic polynomial (so intensity ramps, bias fields and
  gentle shading do not count as noise), per voxel;
* its **structure**: the same residual variance of the slice smoothed by a Gaussian (edges, blobs and
  texture keep most of theirs; the noise, mostly filtered out, little), divided by the local fine-scale noise
  variance so that a region with more noise is not mistaken for a structured one.

On images without negative values each patch's mean square and mean cube are kept too: they tell an
MR magnitude background's noise (:mod:`~MedicalDenoiseLib.estimation.noise_background`).

Patches are kept when their structure is within a generous factor of the flattest ones. A tight cut would
keep only the patches where the noise happens to be weakest and bias the level low, most for spatially
correlated noise, where the smoothed image still carries much of it. Voxels whose 3×3 neighbourhood is
constant (zeroed MR background, CT padding) and a margin around them are never used.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from .rician import background_mean_to_sd
from .robust import MAD_TO_SD, fill_non_finite

__all__ = ["FlatPatches", "PatchCandidates", "PreparedSlices", "polynomial_basis", "prepare_slices", "measure_patches",
           "choose_flat_patches"]

TILE = 8  # patches are 16×16: large enough for noise a few voxels in grain, small enough to find flat ones
_MIN_TILE = 3
_STRUCTURE_SCALE = 2.0  # voxels: Gaussian smoothing before measuring structure
_LEVEL_SMOOTHING = 2.0  # tiles: how far the local noise level that normalises the structure reaches
_LEVEL_RANGE = 2.0  # the local level may differ from the typical one by this factor either way
_PADDING_MARGIN = 3  # voxels next to a constant region (partial volume at a mask edge) are left out
_FLATTEST_FRACTION = 0.05  # the structure cut is set relative to this quantile …
_MIN_PATCHES = 200  # small images get smaller tiles until they hold about this many patches
_MIN_WIDE_PATCHES = 64  # as many for wider tiles: noise correlated that far needs their width more
_MIN_FLATTEST = 4  # … taken over at least this many patches …
_STRUCTURE_FACTOR = 4.0  # … times this factor, wide enough to keep nearly all pure-noise patches
# Magnitude images: (mean/SD cut, as a multiple of pure background's, least share of the candidates above
# it) tried in turn, else all patches. One coil: 6 and 2.5; eight: 8.4 and 6.7.
_MAGNITUDE_CUTS = ((6.0, 1.5, 0.1), (2.5, 1.2, 0.0))
_SAMPLE = 512  # residual patches kept for the noise correlation: plenty for a 17×17 autocovariance
_CHUNK = 4096  # patches gathered at a time: bounded memory on whole CTs
_SECOND_DIFFERENCE = np.array([1.0, -2.0, 1.0])
_SECOND_DIFFERENCE_NORM = 6.0  # sqrt(sum(outer(k, k) ** 2)): keeps white noise's SD unchanged


@dataclass(frozen=True)
class FlatPatches:
    """The patches chosen as flat, with what the noise estimate needs from them.

    Attributes:
        variance: ``(N,)`` residual variance per voxel after the quadratic fit.
        mean: ``(N,)`` mean intensity.
        residuals: ``(M, P, P)`` what is left after the fit, for an even sample of the flat patches of lower
            variance (the least likely to hold some structure), ``M ≤ 512``.
        corners: ``(M, 3)`` their slice index in the input array and top-left in-plane voxel.
        mean_to_sd: ``(N,)`` mean over noise SD of each patch, for MR magnitude images; else None.
        share: the fraction of all candidate patches chosen: near 1 where the image is mostly noise.
        centres: ``(N, 3)`` slice index in the input array and in-plane centre of each patch (voxels).
    """

    variance: np.ndarray
    mean: np.ndarray
    residuals: np.ndarray
    corners: np.ndarray
    mean_to_sd: np.ndarray | None = None
    share: float = 1.0
    centres: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Patch side P in voxels."""
        return int(self.residuals.shape[-1])


@lru_cache(maxsize=8)
def polynomial_basis(size: int) -> np.ndarray:
    """Orthonormal polynomials of total degree ≤ 2 on a ``size × size`` patch: ``(6, size, size)``.

    Order: 1, x, x², y, xy, y² (discrete Legendre polynomials per axis, then products).
    """
    x = np.arange(size) - (size - 1) / 2
    per_axis, _ = np.linalg.qr(np.stack([x**d for d in range(3)], axis=1))
    basis = [np.outer(per_axis[:, a], per_axis[:, b]) for a in range(3) for b in range(3 - a)]
    basis = np.stack(basis)
    basis.flags.writeable = False
    return basis


@dataclass(frozen=True)
class PreparedSlices:
    """Evenly spaced slices of a volume and what both noise estimates compute from them.

    Attributes:
        slices: ``(S, H, W)`` float64, non-finite voxels filled with the median of the finite ones.
        indices: ``(S,)`` their indices along axis 0 of the volume.
        finite: ``(S, H, W)`` which voxels were finite.
        detail: the in-plane ``[1, −2, 1] ⊗ [1, −2, 1]`` filter of each slice, scaled so that white noise
            keeps its SD.
        local_range: max − min over each voxel's 3×3 in-plane neighbourhood (0 inside constant regions).
    """

    slices: np.ndarray
    indices: np.ndarray
    finite: np.ndarray
    detail: np.ndarray
    local_range: np.ndarray


def prepare_slices(volume: np.ndarray, max_slices: int) -> PreparedSlices:
    """At most ``max_slices`` evenly spaced slices of a ``(D, H, W)`` volume, prepared for noise estimation."""
    step = max(1, volume.shape[0] // max_slices)
    slices = volume[::step].astype(np.float64)  # subsample first: a float64 copy of a whole CT is large
    finite = np.isfinite(slices)
    slices, _, _ = fill_non_finite(slices)
    detail = ndimage.correlate1d(slices, _SECOND_DIFFERENCE, axis=1, mode="reflect")
    detail = ndimage.correlate1d(detail, _SECOND_DIFFERENCE, axis=2, mode="reflect") / _SECOND_DIFFERENCE_NORM
    local_range = ndimage.maximum_filter(slices, size=(1, 3, 3)) - ndimage.minimum_filter(slices, size=(1, 3, 3))
    return PreparedSlices(slices, np.arange(0, volume.shape[0], step), finite, detail, local_range)


def _tiles(array: np.ndarray, tile: int) -> np.ndarray:
    """``(S, H, W)`` → ``(S, H // tile, W // tile, tile, tile)`` view of the whole tiles."""
    s, h, w = array.shape
    gy, gx = h // tile, w // tile
    return array[:, :gy * tile, :gx * tile].reshape(s, gy, tile, gx, tile).swapaxes(2, 3)


def _valid_tiles(prepared: PreparedSlices, tile: int) -> np.ndarray:
    """Tiles with no voxel in, or within the margin of, a constant region or a non-finite voxel."""
    invalid = (prepared.local_range == 0) | ~prepared.finite
    count = np.zeros((invalid.shape[0], invalid.shape[1] + 1, invalid.shape[2] + 1))
    count[:, 1:, 1:] = invalid.cumsum(axis=1).cumsum(axis=2)  # integral image: box counts in O(1)
    _, height, width = invalid.shape
    gy, gx = height // tile, width // tile
    low_y = np.clip(np.arange(gy) * tile - _PADDING_MARGIN, 0, height)[:, None]
    high_y = np.clip(np.arange(1, gy + 1) * tile + _PADDING_MARGIN, 0, height)[:, None]
    low_x = np.clip(np.arange(gx) * tile - _PADDING_MARGIN, 0, width)[None, :]
    high_x = np.clip(np.arange(1, gx + 1) * tile + _PADDING_MARGIN, 0, width)[None, :]
    inside = count[:, high_y, high_x] - count[:, low_y, high_x] - count[:, high_y, low_x] + count[:, low_y, low_x]
    return inside == 0


def _local_fine_sd(prepared: PreparedSlices, tile: int, valid_tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tile, a robust SD of the fine-scale detail in it, and the fine-scale noise SD of its neighbourhood:
    the same smoothed over valid tiles and kept within ``_LEVEL_RANGE`` of the image's typical level."""
    detail = _tiles(np.abs(prepared.detail), tile)
    level = MAD_TO_SD * np.median(detail.reshape(*detail.shape[:3], -1), axis=-1)
    # Smooth the log level over valid tiles only (normalised convolution), so edges and padding do not leak in.
    weight = valid_tile.astype(np.float64)
    sigma = (0, _LEVEL_SMOOTHING, _LEVEL_SMOOTHING)
    log_level = ndimage.gaussian_filter(np.log(np.maximum(level, 1e-300)) * weight, sigma, mode="nearest")
    log_level /= np.maximum(ndimage.gaussian_filter(weight, sigma, mode="nearest"), 1e-12)
    local = np.exp(log_level)
    # Noise that varies in space is followed, but fine texture, which raises the local level as noise does,
    # must not make its own region look flat.
    typical = np.median(local[valid_tile]) if valid_tile.any() else 1.0
    return level, np.clip(local, typical / _LEVEL_RANGE, typical * _LEVEL_RANGE)


def _patch_statistics(view: np.ndarray, where: np.ndarray, basis: np.ndarray,
                      powers: bool = False) -> tuple[np.ndarray, ...]:
    """Residual variance per voxel after the quadratic fit, and the mean, of the patches ``view[where]``;
    with ``powers``, their mean square and mean cube too."""
    size = basis.shape[-1]
    variance, mean = np.empty(len(where)), np.empty(len(where))
    square, cube = np.empty(len(where) if powers else 0), np.empty(len(where) if powers else 0)
    for start in range(0, len(where), _CHUNK):
        part = where[start:start + _CHUNK]
        done = slice(start, start + len(part))
        patches = view[part[:, 0], part[:, 1], part[:, 2]]
        coefficients = np.einsum("nij,kij->nk", patches, basis)
        energy = np.einsum("nij,nij->n", patches, patches)
        variance[done] = np.maximum(energy - (coefficients**2).sum(axis=1), 0.0) / size**2
        mean[done] = coefficients[:, 0] / size
        if powers:
            square[done] = energy / size**2
            cube[done] = np.einsum("nij,nij->n", patches * patches, patches) / size**2
    return (variance, mean, square, cube) if powers else (variance, mean)


def _tile_size(count: int, height: int, width: int, largest: int = TILE) -> int:
    """``largest``, or smaller for small images so that there are enough patches to choose the flat ones from."""
    tile = min(largest, height // 4, width // 4)
    enough = _MIN_PATCHES if largest <= TILE else _MIN_WIDE_PATCHES
    while tile > 4 and count * (height // tile - 1) * (width // tile - 1) < enough:
        tile -= 2
    return tile


@dataclass(frozen=True)
class PatchCandidates:
    """Every patch of valid voxels, measured: what :func:`choose_flat_patches` picks from.

    Attributes:
        variance, mean, structure: ``(N,)`` per patch.
        local_fine_sd: ``(N,)`` fine-scale noise SD of the neighbourhood (a few tiles around the patch):
            a noise scale for each patch that hardly depends on the patch's own noise.
        fine_sd: ``(N,)`` robust SD of the fine-scale detail in the patch itself, structure included.
        where: ``(N, 3)`` slice and tile-grid position of each patch.
        prepared: the slices they come from.
        tile: tile side in voxels (patches are twice as wide).
        mean_square, mean_cube: ``(N,)`` mean of the squares and of the cubes of the voxels, for images
            without negative values; else None.
    """

    variance: np.ndarray
    mean: np.ndarray
    structure: np.ndarray
    local_fine_sd: np.ndarray
    fine_sd: np.ndarray
    where: np.ndarray
    prepared: PreparedSlices
    tile: int
    mean_square: np.ndarray | None = None
    mean_cube: np.ndarray | None = None

    @property
    def magnitude(self) -> bool:
        """Whether the image may be an MR magnitude image (it has no negative values)."""
        return bool(self.prepared.slices.min() >= 0)

    def view(self) -> np.ndarray:
        """``(S, gy, gx, P, P)`` view of all patches of the slices."""
        size = 2 * self.tile
        return sliding_window_view(self.prepared.slices, (size, size), axis=(1, 2))[:, ::self.tile, ::self.tile]


def measure_patches(prepared: PreparedSlices, largest_tile: int = TILE) -> PatchCandidates | None:
    """Variance, mean and structure of every patch of valid voxels.

    Args:
        prepared: the slices from :func:`prepare_slices`.
        largest_tile: tile side to use when the image is large enough (patches are twice as wide).

    Returns:
        The candidates, or None when the slices are too small (under 12 voxels in-plane) or hold no patch of
        valid voxels.
    """
    tile = _tile_size(*prepared.slices.shape, largest_tile)
    if tile < _MIN_TILE:
        return None
    valid = _valid_tiles(prepared, tile)
    level, local = _local_fine_sd(prepared, tile, valid)
    # A patch is tiles (a, b), (a+1, b), (a, b+1), (a+1, b+1).
    valid = valid[:, :-1, :-1] & valid[:, 1:, :-1] & valid[:, :-1, 1:] & valid[:, 1:, 1:]
    local = (local[:, :-1, :-1] + local[:, 1:, :-1] + local[:, :-1, 1:] + local[:, 1:, 1:]) / 4
    level = (level[:, :-1, :-1] + level[:, 1:, :-1] + level[:, :-1, 1:] + level[:, 1:, 1:]) / 4
    where = np.argwhere(valid)
    if where.size == 0:
        return None
    size, basis = 2 * tile, polynomial_basis(2 * tile)
    view = sliding_window_view(prepared.slices, (size, size), axis=(1, 2))[:, ::tile, ::tile]
    magnitude = bool(prepared.slices.min() >= 0)
    variance, mean, *powers = _patch_statistics(view, where, basis, powers=magnitude)
    # Structure: what the quadratic fit leaves of the smoothed image. Smoothing keeps edges, blobs and
    # texture a few voxels wide and removes most of the noise (white noise keeps ~2 % of its variance).
    smooth = ndimage.gaussian_filter(prepared.slices, (0, _STRUCTURE_SCALE, _STRUCTURE_SCALE), truncate=3.0)
    smooth_view = sliding_window_view(smooth, (size, size), axis=(1, 2))[:, ::tile, ::tile]
    left, _ = _patch_statistics(smooth_view, where, basis)
    local = local[tuple(where.T)]
    return PatchCandidates(variance, mean, left / local**2, local, level[tuple(where.T)], where, prepared, tile,
                           *powers)


def _bright_pool(candidates: PatchCandidates, sd_per_fine_sd: float, dof: float) -> np.ndarray:
    """Candidates of a magnitude image far enough above zero for Gaussian noise, when there are enough.

    The noise SD of each patch is taken from its neighbourhood's fine-scale level times the image's ratio of
    full to fine-scale SD, not from the patch itself: a cut on a patch's own mean/SD would favour patches
    where the noise happens to be weak. Background lies below both cuts, which rise with the number of
    coils: pure background of eight has a mean/SD of 5.6.
    """
    mean_to_sd = candidates.mean / np.maximum(candidates.local_fine_sd * sd_per_fine_sd, 1e-300)
    background = float(background_mean_to_sd(dof))
    everything = np.arange(mean_to_sd.size)
    for cut, per_background, share in _MAGNITUDE_CUTS:
        pool = everything[mean_to_sd >= max(cut, per_background * background)]
        if pool.size >= max(_MIN_FLATTEST, share * mean_to_sd.size):
            return pool
    return everything


def choose_flat_patches(candidates: PatchCandidates, sd_per_fine_sd: float | None = None,
                        dof: float = 2.0) -> FlatPatches:
    """The flat patches among the candidates.

    Args:
        candidates: from :func:`measure_patches`.
        sd_per_fine_sd: for MR magnitude images, the ratio of the full noise SD to its fine-scale part
            (:attr:`NoiseCorrelation.sd_per_fine_sd`): dark patches are then left out as background when
            enough others remain, and each patch's mean/SD is reported for the Rician correction.
        dof: degrees of freedom of the magnitude noise (twice the coils combined), for that choice.

    Returns:
        The flat patches.
    """
    pool = np.arange(candidates.mean.size) if sd_per_fine_sd is None else _bright_pool(candidates, sd_per_fine_sd, dof)
    structure = candidates.structure[pool]
    rank = min(pool.size - 1, max(_MIN_FLATTEST, int(_FLATTEST_FRACTION * pool.size)))
    chosen = pool[structure <= _STRUCTURE_FACTOR * np.partition(structure, rank)[rank]]

    # Residuals of the quieter half only: a patch with some structure left in it sits in the upper half.
    quiet = chosen[candidates.variance[chosen] <= np.median(candidates.variance[chosen])]
    sample = candidates.where[quiet[np.linspace(0, quiet.size - 1, min(quiet.size, _SAMPLE)).astype(int)]]
    kept = candidates.view()[tuple(sample.T)]
    basis = polynomial_basis(2 * candidates.tile)
    residuals = kept - np.einsum("nk,kij->nij", np.einsum("nij,kij->nk", kept, basis), basis)
    corners = np.stack([candidates.prepared.indices[sample[:, 0]], sample[:, 1] * candidates.tile,
                        sample[:, 2] * candidates.tile], axis=1)
    mean_to_sd = None
    if sd_per_fine_sd is not None:
        mean_to_sd = candidates.mean[chosen] / (candidates.local_fine_sd[chosen] * sd_per_fine_sd)
    tile, where = candidates.tile, candidates.where[chosen]
    centres = np.stack([candidates.prepared.indices[where[:, 0]], where[:, 1] * tile + tile - 0.5,
                        where[:, 2] * tile + tile - 0.5], axis=1).astype(np.float64)
    return FlatPatches(candidates.variance[chosen], candidates.mean[chosen], residuals, corners, mean_to_sd,
                       chosen.size / candidates.mean.size, centres)
