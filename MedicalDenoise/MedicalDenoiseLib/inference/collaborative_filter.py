"""A third pass: Wiener filtering of groups of similar cubes, as in BM4D's second stage.

The Wiener refinement (:mod:`.wiener_refinement`) judges each window alone. Here the image's own repetition is
used as well: for every reference cube (``CUBE`` voxels on an edge, every ``STEP`` voxels) the ``GROUP`` cubes
nearby that look most like it *in the refined image* are stacked. The stack of the *noisy* cubes is filtered in
one separable transform (a DCT over each cube, a DCT across the stack) with Wiener gains from the refined image's
coefficients and the scan's noise variance per coefficient. Structure repeats across the stack and adds up;
the noise does not. Every cube of every group goes back to its place, weighted by the inverse of its group's
remaining noise (Maggioni et al., "Nonlocal transform-domain filter for volumetric data denoising and
reconstruction", IEEE TIP 2013; Dabov et al., BM3D, IEEE TIP 2007).

Cubes are matched on the refined image (noise-free enough that noise does not decide the match), so the pass
needs the Wiener refinement before it.

A large volume is filtered in slabs of planes (:func:`collaborate`), each with ``HALO`` planes of its neighbours
on either side: a voxel's groups reach at most 7 planes away, so the grouping is exactly that of the whole volume,
and only the coarse band (an FFT low-pass) sees a slab's edge; memory then follows the slab, not the volume.

**The coarsest frequencies come from the Wiener refinement** (:func:`with_coarse_band`): a small, faint lesion
lives there, and grouping averages it with look-alikes that lack it. Lesions inserted into real scans
(``benchmarks/sublattice.py`` real part; the Wiener refinement alone in brackets), with the band below 0 / 0.14 /
0.2 / 0.25 / 0.3 cycles per voxel taken from the refinement: chest MR 72 / 78 / 80 / 80 / – % (80 %), 2D FLASH head
68 / 78 / 82 / 82 / – % (82 %), MPRAGE phantom – / – / 79 / 81 / 82 % (83 %), B-mode 81 / 93 / – % (94 %). On
cached pilots the pass with the band below 0.2 / 0.25 kept still gains +0.26 / +0.20 dB (MNI in k-space, 1 coil,
6 %), +0.16 / +0.10 (brain2), +0.45 / +0.35 (CT 3 mm), +0.63 / +0.51 (white 5 %) over the refinement.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.fft
import torch

from ..errors import Cancelled

__all__ = ["CUBE", "GROUP", "HALO", "KEPT_BELOW", "SEARCH", "SLAB_VOXELS", "STEP", "Grouping", "coefficient_variance",
           "collaborate", "cube_shape", "dct_matrix", "group_filter", "with_coarse_band"]

# Gains over the Wiener refinement below: cached pilots (``benchmarks/sublattice.py``'s MNI in k-space, 1 coil, 6 %,
# and white 5 %), without the coarse band.
# Cube edge and the reference cubes' spacing: STEP 3 +0.49 / +0.95 dB, STEP 4 +0.38 / +0.76 at a third of the
# time; 8³ cubes every 4 voxels +0.25 (MNI).
CUBE = 4
STEP = 4
# Candidate offsets (z, y, x) around each reference cube, at STEP 3 (MNI): (2, 5, 5) +0.49 dB, (2, 4, 4) +0.48,
# (1, 4, 4) +0.38; only even offsets (the grain's period), (2, 6, 6): +0.27.
SEARCH = (2, 4, 4)
# Cubes per group, at STEP 3 (MNI): 1 (no grouping) −0.38 dB, 4 +0.14, 8 +0.38, 16 +0.49, 32 +0.49.
GROUP = 16
# Frequencies up to this many cycles per voxel come from the Wiener refinement (see the module notes).
KEPT_BELOW = 0.25
# Planes of the neighbouring slabs on each side of a slab: a multiple of STEP (so the slab's reference cubes are
# the volume's) covering a voxel's reach (a cube 3 planes up, its reference SEARCH[0] beyond, that reference's
# candidates SEARCH[0] beyond again: 7) with room for the coarse band's low-pass.
HALO = 16
# Voxels of a slab's own planes (halo excluded): 512 × 512 planes go 64 at a time, most MR volumes in one slab.
SLAB_VOXELS = 1 << 24
_ROWS_PER_STEP = 4  # reference rows (along z) matched at once
_GROUPS_PER_BATCH = 2048  # groups filtered at once: memory ∝ GROUP × CUBE³ × this
_LEAST_VARIANCE = 1e-4  # relative to the mean: a coefficient with no noise still gets a finite gain


@dataclass(frozen=True)
class Grouping:
    """What the collaborative pass did: its cube ``(z, y, x)`` and the cubes per group."""

    cube: tuple[int, int, int]
    group: int

    def describe(self) -> str:
        cube = "×".join(map(str, self.cube[1:] if self.cube[0] == 1 else self.cube))
        return f"filtered again in groups of {self.group} similar {cube} cubes"


def cube_shape(window: tuple[int, int, int]) -> tuple[int, int, int]:
    """``CUBE`` along each axis the Wiener refinement's window spans, else 1 (thick slices, 2D images)."""
    return tuple(CUBE if w > 1 else 1 for w in window)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II as an ``(n, n)`` matrix: rows are the basis functions."""
    k, i = np.arange(n)[:, None], np.arange(n)[None]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def coefficient_variance(autocovariance: np.ndarray, cube: tuple[int, int, int]) -> np.ndarray:
    """The noise variance of each coefficient of a cube's separable DCT, ``(prod(cube),)``, flattened as the
    cube is.

    ``autocovariance`` covers lags ``−(c − 1) … c − 1`` along each axis (``c`` the cube's edge), zero lag at
    its centre: ``Var(b·n) = bᵀ C b`` for every basis function ``b``, with ``C`` the noise covariance in a cube.
    """
    expected = tuple(2 * c - 1 for c in cube)
    if autocovariance.shape != expected:
        raise ValueError(f"autocovariance must have shape {expected} for a {cube} cube, got {autocovariance.shape}")
    basis = _basis(cube)
    places = np.array(list(itertools.product(*[range(c) for c in cube])))
    lags = places[:, None, :] - places[None, :, :]
    covariance = autocovariance[tuple(lags[..., axis] + cube[axis] - 1 for axis in range(3))]
    variance = np.einsum("ka,ab,kb->k", basis, covariance, basis)
    return np.maximum(variance, _LEAST_VARIANCE * max(float(variance.mean()), 1e-30)).astype(np.float32)


def _basis(cube: tuple[int, int, int]) -> np.ndarray:
    """The separable DCT of a cube as one ``(V, V)`` matrix on flattened cubes."""
    basis = np.ones((1, 1))
    for edge in cube:
        basis = np.kron(basis, dct_matrix(edge))
    return basis


def _grid(length: int, edge: int, step: int) -> int:
    """How far an axis must be extended for cubes every ``step`` voxels to end exactly at its last voxel."""
    return -(length - edge) % step


def collaborate(noisy: np.ndarray, refined: np.ndarray, variance: np.ndarray, cube: tuple[int, int, int],
                progress: Callable[[float], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """The collaborative pass: :func:`group_filter` on ``noisy`` guided by ``refined``, then
    :func:`with_coarse_band` from ``refined``, slab by slab of planes (see the module notes)."""
    depth, height, width = noisy.shape
    planes = max(STEP, SLAB_VOXELS // (height * width) // STEP * STEP)
    halo = HALO if cube[0] > 1 else 0  # cubes one plane thick: the planes are independent
    axes = tuple(c > 1 for c in cube)
    starts = list(range(0, depth, planes))  # with its halo even a one-plane last slab holds a cube
    output = np.empty(noisy.shape, np.float32)
    for index, start in enumerate(starts):
        stop = starts[index + 1] if index + 1 < len(starts) else depth
        low, high = max(0, start - halo), min(depth, stop + halo)

        def slab_progress(fraction: float, index=index) -> None:
            if progress is not None:
                progress((index + fraction) / len(starts))

        grouped = group_filter(noisy[low:high], refined[low:high], variance, cube, slab_progress, cancel)
        output[start:stop] = with_coarse_band(grouped, refined[low:high], axes)[start - low: stop - low]
    return output


def group_filter(noisy: np.ndarray, guide: np.ndarray, variance: np.ndarray, cube: tuple[int, int, int],
                 progress: Callable[[float], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """``noisy`` filtered in groups of cubes matched on ``guide`` (both ``(D, H, W)``).

    Args:
        noisy: what was denoised.
        guide: the refined image: it picks the groups and gives the Wiener gains.
        variance: :func:`coefficient_variance` for ``cube``.
        cube: the cube's edges ``(z, y, x)`` (1 along an axis means no extent along it).
        progress: called with the fraction done.
        cancel: polled between rows of reference cubes; returning True raises :class:`Cancelled`.

    Raises:
        ValueError: when the cube is larger than the volume along an axis.
        Cancelled: when ``cancel()`` returned True.
    """
    shape = noisy.shape
    if any(n < c for n, c in zip(shape, cube)):
        raise ValueError(f"a {cube} cube does not fit a volume of shape {shape}")
    steps = tuple(STEP if c > 1 else 1 for c in cube)
    search = tuple(s if c > 1 else 0 for s, c in zip(SEARCH, cube))
    extension = [_grid(n, c, s) for n, c, s in zip(shape, cube, steps)]
    pad = [(0, e) for e in extension]
    y = torch.from_numpy(np.pad(noisy.astype(np.float32, copy=False), pad, mode="edge"))
    g = torch.from_numpy(np.pad(guide.astype(np.float32, copy=False), pad, mode="edge"))
    depth, height, width = y.shape
    grids = [torch.arange(0, n - c + 1, s) for n, c, s in zip(y.shape, cube, steps)]
    offsets = torch.tensor(list(itertools.product(*[range(-r, r + 1) for r in search])))
    group = min(GROUP, len(offsets))
    basis = torch.from_numpy(_basis(cube).astype(np.float32))
    across = torch.from_numpy(dct_matrix(group).astype(np.float32))
    noise = torch.from_numpy(variance)
    # The guide with a margin of the search radius, so every offset is a plain slice.
    margin = torch.nn.functional.pad(g[None, None], (search[2],) * 2 + (search[1],) * 2 + (search[0],) * 2)[0, 0]
    inside = _linear(torch.cartesian_prod(*[torch.arange(c) for c in cube]).reshape(-1, 3), height, width)
    flat_noisy, flat_guide = y.reshape(-1), g.reshape(-1)
    total = torch.zeros(y.numel())
    weights = torch.zeros(y.numel())
    rows = grids[0].split(_ROWS_PER_STEP)
    for done, row in enumerate(rows):
        if cancel is not None and cancel():
            raise Cancelled("denoising was cancelled")
        distance = _distances(g, margin, row, grids, cube, steps, search, offsets)
        nearest = distance.topk(group, dim=1, largest=False).indices
        references = torch.cartesian_prod(row, grids[1], grids[2]).reshape(-1, 3)
        corners = _linear(references[:, None, :] + offsets[nearest], height, width)  # (refs, group)
        for batch in corners.split(_GROUPS_PER_BATCH):
            index = batch[:, :, None] + inside[None, None]
            noisy_coefficients = torch.matmul(across, flat_noisy[index] @ basis.T)
            guide_power = torch.matmul(across, flat_guide[index] @ basis.T).square_()
            gain = guide_power / (guide_power + noise)
            estimate = torch.matmul(across.T, noisy_coefficients * gain) @ basis
            # Each group weighs by the inverse of the noise it leaves.
            weight = 1.0 / (gain.square() * noise).sum(dim=(1, 2)).clamp_(min=1e-12)
            total.index_add_(0, index.reshape(-1), (estimate * weight[:, None, None]).reshape(-1))
            weights.index_add_(0, index.reshape(-1), weight[:, None, None].expand_as(estimate).reshape(-1))
        if progress is not None:
            progress((done + 1) / len(rows))
    result = (total / weights).reshape(depth, height, width)
    return result[: shape[0], : shape[1], : shape[2]].numpy()


def _linear(places: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat indices of ``(…, 3)`` voxel places ``(z, y, x)`` in a volume of rows ``height`` and ``width``."""
    return (places[..., 0] * height + places[..., 1]) * width + places[..., 2]


def _distances(guide: torch.Tensor, margin: torch.Tensor, row: torch.Tensor, grids: list[torch.Tensor],
               cube: tuple[int, int, int], steps: tuple[int, int, int], search: tuple[int, int, int],
               offsets: torch.Tensor) -> torch.Tensor:
    """Squared difference summed on ``guide`` between each reference cube starting in ``row`` (z starts) and the
    cube at each offset: ``(references, offsets)``; offsets that leave the volume are infinitely far."""
    first, last = int(row[0]), int(row[-1]) + cube[0]
    depth, height, width = guide.shape
    references = guide[first:last]
    ones = torch.ones(1, 1, *cube)  # summing by convolution: faster on the CPU than pooling or reshaping
    out = torch.empty(len(offsets), len(row), len(grids[1]), len(grids[2]))
    for j, (dz, dy, dx) in enumerate(offsets.tolist()):
        moved = margin[search[0] + dz + first: search[0] + dz + last, search[1] + dy: search[1] + dy + height,
                       search[2] + dx: search[2] + dx + width]
        squared = (references - moved).square_()[None, None]
        total = torch.nn.functional.conv3d(squared, ones, stride=cube)[0, 0]
        outside = (((row + dz < 0) | (row + dz > depth - cube[0]))[:, None, None]
                   | ((grids[1] + dy < 0) | (grids[1] + dy > height - cube[1]))[None, :, None]
                   | ((grids[2] + dx < 0) | (grids[2] + dx > width - cube[2]))[None, None, :])
        out[j] = total.masked_fill_(outside, float("inf"))
    return out.reshape(len(offsets), -1).T


def with_coarse_band(filtered: np.ndarray, refined: np.ndarray, axes: tuple[bool, bool, bool],
                     below: float = KEPT_BELOW) -> np.ndarray:
    """``filtered`` with its frequencies up to ``below`` cycles per voxel replaced by ``refined``'s.

    ``axes`` says along which axes frequency counts (False: every frequency along that axis is coarse, as
    for thick slices filtered in-plane). The difference is mirrored at the borders before the FFT, so the
    volume's opposite faces do not leak into each other.

    The FFT is SciPy's: torch 2.13's CPU inverse real FFT (MKL) corrupts the heap on some volume shapes
    (16 × 640 × 640 among them, a real chest MR's; 16 × 512 × 512 on two threads) and the process aborts.
    """
    difference = refined.astype(np.float32) - filtered
    margin = [min(2 * CUBE * 2, n - 1) if on and n > 1 else 0 for n, on in zip(difference.shape, axes)]
    mirrored = np.pad(difference, [(m, m) for m in margin], mode="symmetric")
    del difference
    squared = np.zeros((1, 1, 1), np.float32)
    for axis, (length, on) in enumerate(zip(mirrored.shape, axes)):
        frequency = (np.fft.rfftfreq(length) if axis == 2 else np.fft.fftfreq(length)).astype(np.float32)
        if not on:
            frequency = np.zeros_like(frequency)
        squared = squared + frequency.reshape([-1 if i == axis else 1 for i in range(3)]) ** 2
    workers = max(1, torch.get_num_threads())
    spectrum = scipy.fft.rfftn(mirrored, workers=workers)
    spectrum *= squared <= below**2 + 1e-12
    coarse = scipy.fft.irfftn(spectrum, s=mirrored.shape, workers=workers, overwrite_x=True)
    inner = tuple(slice(m, m + n) for m, n in zip(margin, filtered.shape))
    return (filtered + coarse[inner]).astype(np.float32)
