"""Sub-lattices: every s-th voxel along each axis, so that correlated scanner grain becomes nearly white.

Grain is made by sampling (zero-filled k-space, interpolation, a reconstruction kernel, the speckle PSF) and is
correlated over about ``s`` voxels; the voxels ``s`` apart carry nearly independent noise (pixel-shuffle
down-sampling, Zhou et al., AAAI 2020). A network trained on white noise is strong there. :func:`split` cuts a
``(D, H, W)`` volume into its ``sz·sy·sx`` sub-lattices, stacked on a leading axis so they run as one batch;
:func:`merge` interleaves them back. ``merge(split(v, s), s, v.shape)`` is ``v`` exactly.

Denoised apart, the sub-lattices disagree: each keeps its own slowly varying remnant of the noise (no denoiser
can tell it from anatomy), and interleaved those remnants alternate from voxel to voxel, a grid at the lattice
frequencies. :func:`agree` makes what each sub-lattice removed share its slow part with the others, which takes
the grid away at its cause and leaves the rest of the output as it was.
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

__all__ = ["Strides", "split", "merge", "offsets", "agree", "AGREEMENT_SIGMA"]

# Gaussian SD, in sub-lattice voxels, of the slow part that the sub-lattices are made to share. Measured on FBP
# CT water (docs/benchmarks.md, sublattice section): 0.7 leaves no grid (seam score 1.25 against the input's 1.02)
# and lowers the noise SD to 0.36-0.41x; 1.0 and wider leave more grid, because less of each sub-lattice's remnant
# is shared.
AGREEMENT_SIGMA = 0.7
_CHUNK = 16  # slices agreed at once

Strides = tuple[int, int, int]


def offsets(strides: Strides) -> list[tuple[int, int, int]]:
    """The sub-lattices' first voxels, in the order :func:`split` stacks them."""
    return list(itertools.product(*(range(s) for s in strides)))


def _check(strides: Strides) -> Strides:
    strides = tuple(int(s) for s in strides)
    if len(strides) != 3 or min(strides) < 1:
        raise ValueError(f"strides must be three integers >= 1, got {strides}")
    return strides  # type: ignore[return-value]


def split(volume: np.ndarray, strides: Strides) -> np.ndarray:
    """The sub-lattices of ``volume``, ``(sz·sy·sx, ⌈D/sz⌉, ⌈H/sy⌉, ⌈W/sx⌉)``.

    An axis that is not a multiple of its stride is first extended by mirroring its last voxels, so every
    sub-lattice has the same shape (the extension is dropped again by :func:`merge`).
    """
    strides = _check(strides)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (D, H, W), got shape {volume.shape}")
    pad = [(0, -n % s) for n, s in zip(volume.shape, strides)]
    if any(after for _, after in pad):
        if any(after >= n for (_, after), n in zip(pad, volume.shape)):
            volume = np.pad(volume, pad, mode="edge")  # too short to mirror
        else:
            volume = np.pad(volume, pad, mode="symmetric")
    return np.stack([volume[z::strides[0], y::strides[1], x::strides[2]] for z, y, x in offsets(strides)])


def merge(sublattices: np.ndarray, strides: Strides, shape: tuple[int, int, int]) -> np.ndarray:
    """Interleaves :func:`split`'s sub-lattices back into a ``shape`` volume."""
    strides = _check(strides)
    count = int(np.prod(strides))
    if sublattices.ndim != 4 or sublattices.shape[0] != count:
        raise ValueError(f"expected ({count}, d, h, w) sub-lattices for strides {strides}, got {sublattices.shape}")
    full = tuple(n * s for n, s in zip(sublattices.shape[1:], strides))
    out = np.empty(full, dtype=sublattices.dtype)
    for sub, (z, y, x) in zip(sublattices, offsets(strides)):
        out[z::strides[0], y::strides[1], x::strides[2]] = sub
    return out[: shape[0], : shape[1], : shape[2]]


def agree(output: np.ndarray, image: np.ndarray, strides: Strides, sigma: float = AGREEMENT_SIGMA) -> np.ndarray:
    """``output`` (``image`` denoised on its sub-lattices) with the grid between the sub-lattices removed.

    What was removed, ``output − image``, is low-passed on each sub-lattice (Gaussian of ``sigma`` sub-lattice
    voxels along the split axes) and on the whole grid (the same Gaussian in full voxels, ``sigma × stride``, so
    every sub-lattice contributes); each sub-lattice's own slow part is replaced by the shared one. A removal
    that is the same on every sub-lattice passes unchanged.

    Args:
        output: the interleaved result, ``(D, H, W)``.
        image: what was denoised, same shape.
        strides: the sub-lattice strides.
        sigma: the Gaussian SD in sub-lattice voxels.
    """
    strides = _check(strides)
    if strides[0] == 1 and output.shape[0] > _CHUNK:
        # Slices are independent when they are not split: a few at a time keeps the copies small.
        result = np.empty_like(output)
        for start in range(0, output.shape[0], _CHUNK):
            part = slice(start, start + _CHUNK)
            result[part] = agree(output[part], image[part], strides, sigma)
        return result
    removed = (output - image).astype(np.float32)
    parts = split(removed, strides)
    own = ndimage.gaussian_filter(parts, [0.0] + [sigma if s > 1 else 0.0 for s in strides], mode="reflect")
    shared = ndimage.gaussian_filter(removed, [sigma * s if s > 1 else 0.0 for s in strides], mode="reflect")
    parts += split(shared, strides) - own
    return image + merge(parts, strides, image.shape)
