"""Lesion retention: how much of small, faint lesions inserted into a real scan a denoiser keeps.

A real scan has no clean reference, so what a denoiser erases along with the noise cannot be measured on its
own anatomy. Inserting known lesions gives one: denoise the scan with and without them, and the difference of
the two outputs is what the denoiser made of the lesions alone (noise, anatomy and the denoiser's own bias
cancel). :func:`insert_lesions` places smooth blobs of ``contrast`` × the noise level in the flattest tissue,
where a denoiser smooths hardest; :func:`retention` compares the output difference with the inserted one over
the lesions' cores (1: kept, 0: erased); :func:`measure_retention` does both with a denoising function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .reference_free import foreground_mask, local_sd

__all__ = ["LesionSet", "lesion_radii", "insert_lesions", "retention", "measure_retention"]

# A foreground under this share of the image means the threshold missed the body; then all voxels are used.
_MIN_FOREGROUND_FRACTION = 0.1
_FLAT_FRACTION = 0.2
# Centres at least this many radii apart (blobs exp(-2 r^2) are ~1e-14 of their peak at 4 radii) and at least
# _BORDER radii from the image's edge, so no blob is cut off or leans on another.
_SEPARATION = 4.0
_BORDER = 3.0
_CORE_LEVEL = 0.5
_MAX_CANDIDATES = 200_000


def lesion_radii(shape: tuple[int, ...]) -> tuple[float, ...]:
    """Blob radii in voxels for an image of ``shape``: 4-pixel blobs in 2D; 1.5 × 3 × 3 voxels (z, y, x) in a
    volume, and one slice thin (0.3) where it has under 10 slices, so a blob fits between the borders."""
    if len(shape) == 2:
        return (4.0, 4.0)
    return (1.5, 3.0, 3.0) if shape[0] >= 10 else (0.3, 3.0, 3.0)


@dataclass(frozen=True, eq=False)
class LesionSet:
    """Lesions inserted into one image by :func:`insert_lesions`.

    Attributes:
        image: the input as float32 with the lesions added.
        lesion_map: float32 ``image − input`` (the sum of the blobs, up to float32 rounding).
        amplitude: each blob's peak, ``contrast`` × the median local SD of the flattest foreground.
        centres: integer voxel indices, ``(K, ndim)``; ``K`` may be below the ``count`` asked for.
        cores: boolean mask of the voxels where a blob is at least half its peak.
    """

    image: np.ndarray
    lesion_map: np.ndarray
    amplitude: float
    centres: np.ndarray
    cores: np.ndarray


def insert_lesions(image: np.ndarray, count: int = 12, radii: tuple[float, ...] | None = None,
                   contrast: float = 1.5, rng: np.random.Generator | None = None) -> LesionSet:
    """Add ``count`` smooth blobs ``amplitude · exp(−2 r²)`` at random, non-overlapping, flat places.

    Flat means in the fifth of the foreground (:func:`~.reference_free.foreground_mask` of the image scaled
    to [0, 1] by its 1st/99th percentiles; all voxels when that finds under a tenth of them) with the lowest
    local SD; the median local SD there is the noise level the amplitude is scaled to.

    Args:
        image: ``(D, H, W)`` or ``(H, W)``, any intensity units.
        count: lesions wanted (>= 1); fewer are placed when the flat region cannot hold them.
        radii: per-axis radius in voxels, ``r² = Σ ((x_i − c_i) / radius_i)²``; default
            :func:`lesion_radii`.
        contrast: peak in units of that noise level (> 0).
        rng: random generator for the centres (default: seed 0, so a benchmark repeats itself).

    Returns:
        The :class:`LesionSet`.

    Raises:
        ValueError: for a bad shape or argument, an image with no local variation, or no room for a lesion.
    """
    values = np.asarray(image, dtype=np.float64)
    if values.ndim not in (2, 3) or values.size == 0:
        raise ValueError(f"image must be a non-empty 2D or 3D array, got shape {values.shape}")
    radii = np.asarray(radii if radii is not None else lesion_radii(values.shape), dtype=np.float64)
    if radii.shape != (values.ndim,) or not np.all(radii > 0):
        raise ValueError(f"radii must be {values.ndim} numbers > 0, got {radii.tolist()}")
    if int(count) != count or count < 1 or not contrast > 0:
        raise ValueError(f"count must be an integer >= 1 and contrast > 0, got {count} and {contrast}")
    rng = np.random.default_rng(0) if rng is None else rng

    low, high = np.percentile(values, [1, 99])
    foreground = foreground_mask((values - low) / (high - low) if high > low else np.zeros_like(values))
    if foreground.sum() < _MIN_FOREGROUND_FRACTION * values.size:
        foreground = np.ones(values.shape, dtype=bool)
    spread = local_sd(values, (3, 5, 5) if values.ndim == 3 else (5, 5))
    flat = foreground & (spread <= np.quantile(spread[foreground], _FLAT_FRACTION))
    amplitude = float(contrast * np.median(spread[flat]))
    if not amplitude > 0:
        raise ValueError("the flattest foreground has no local variation, so a lesion would have no amplitude")

    # Candidate centres: flat voxels far enough from every edge, visited in random order.
    margin = np.ceil(_BORDER * radii).astype(int)
    inside = np.zeros(values.shape, dtype=bool)
    inside[tuple(slice(m, n - m) for m, n in zip(margin, values.shape))] = True
    candidates = np.flatnonzero(flat & inside)
    if len(candidates) == 0:
        raise ValueError(f"no flat voxel lies {_BORDER:g} radii {radii.tolist()} from the border of {values.shape}")
    # A random subset is as random as all of them and keeps a large CT's search small.
    candidates = rng.permutation(candidates)[:_MAX_CANDIDATES]
    candidates = np.stack(np.unravel_index(candidates, values.shape), axis=1)
    free = np.ones(len(candidates), dtype=bool)
    centres = []
    while len(centres) < count and free.any():
        centre = candidates[np.argmax(free)]  # the first candidate not too close to a placed lesion
        centres.append(centre)
        free &= (((candidates - centre) / radii) ** 2).sum(axis=1) >= _SEPARATION**2

    lesion_map = np.zeros(values.shape, dtype=np.float64)
    cores = np.zeros(values.shape, dtype=bool)
    for centre in centres:
        # Each blob within its border margin: beyond 3 radii it is below 2e-8 of its peak.
        box = tuple(slice(c - m, c + m + 1) for c, m in zip(centre, margin))
        offsets = np.meshgrid(*[np.arange(-m, m + 1) / r for m, r in zip(margin, radii)], indexing="ij")
        blob = np.exp(-2.0 * sum(offset**2 for offset in offsets))
        lesion_map[box] += amplitude * blob
        cores[box] |= blob >= _CORE_LEVEL
    base = values.astype(np.float32)
    with_lesions = (base + lesion_map).astype(np.float32)
    # The map is what the float32 inputs really differ by, so an identity denoiser retains exactly 1.
    difference = with_lesions.astype(np.float64) - base
    return LesionSet(image=with_lesions, lesion_map=difference.astype(np.float32),
                     amplitude=amplitude, centres=np.array(centres, dtype=int), cores=cores)


def retention(denoised_with: np.ndarray, denoised_without: np.ndarray, lesions: LesionSet) -> float:
    """Share of the inserted lesions a denoiser kept: mean output difference over the cores / mean inserted.

    Args:
        denoised_with: the denoiser's output for ``lesions.image``.
        denoised_without: its output for the input as float32 (the image :func:`insert_lesions` was given).
        lesions: what was inserted.

    Returns:
        1.0 when the lesions come through unchanged, 0 when erased (below 0 or above 1 is possible).

    Raises:
        ValueError: when the outputs' shapes differ from the lesions'.
    """
    shape = lesions.cores.shape
    with_, without = np.asarray(denoised_with, np.float64), np.asarray(denoised_without, np.float64)
    if with_.shape != shape or without.shape != shape:
        raise ValueError(f"outputs must have the image's shape {shape}, got {with_.shape} and {without.shape}")
    kept = float((with_ - without)[lesions.cores].mean())
    return kept / float(lesions.lesion_map[lesions.cores].astype(np.float64).mean())


def measure_retention(denoise: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                      rng: np.random.Generator | None = None, **kwargs) -> float:
    """Insert lesions into ``image`` (``kwargs`` go to :func:`insert_lesions`), denoise it with and without
    them and return :func:`retention`. ``denoise`` gets float32 arrays of the image's shape."""
    lesions = insert_lesions(image, rng=rng, **kwargs)
    base = np.asarray(image, dtype=np.float32)
    return retention(denoise(lesions.image), denoise(base), lesions)
