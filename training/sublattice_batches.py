"""Batches for a sub-lattice twin: full-resolution noisy patches split into their sub-lattices.

Under ``--grain auto`` the denoiser splits an image whose grain is correlated over ``s`` voxels into its
``s``-strided sub-lattices (:mod:`MedicalDenoiseLib.inference.sublattice`), where the grain is nearly white. A
network trained on whole images then meets something it never saw: anatomy sampled every ``s``-th voxel, whose
fine detail aliases into a checkerboard-like texture that it takes for noise and removes. A twin trained on
exactly that input (patches made noisy at full resolution, then split) learns to keep it.

Each sample is told the level measured on its whole patch, which is what the denoiser measures on the whole
image and tells every sub-lattice.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from MedicalDenoiseLib.inference.sublattice import split

if TYPE_CHECKING:
    from .batches import Batch

__all__ = ["full_patch_shape", "on_sublattices"]


def full_patch_shape(patch_size: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, ...]:
    """The full-resolution patch whose sub-lattices are ``patch_size``."""
    return tuple(p * s for p, s in zip(patch_size, strides))


def on_sublattices(batch: "Batch", strides: tuple[int, int, int]) -> "Batch":
    """``(B, D, H, W)`` patches → ``(B·n, D/sz, H/sy, W/sx)`` sub-lattice samples, ``n = sz·sy·sx``.

    The sub-lattices of one patch are consecutive; levels and loss weights are repeated for each.

    Raises:
        ValueError: for a batch without clean targets, or patch extents not multiples of the strides.
    """
    if batch.clean is None:
        raise ValueError("sub-lattice batches need clean targets")
    if any(n % s for n, s in zip(batch.noisy.shape[1:], strides)):
        raise ValueError(f"patch {batch.noisy.shape[1:]} is not a multiple of the strides {tuple(strides)}")
    count = int(np.prod(strides))
    noisy = np.concatenate([split(patch, strides) for patch in batch.noisy])
    clean = np.concatenate([split(patch, strides) for patch in batch.clean])
    return replace(batch, noisy=noisy, clean=clean, levels=np.repeat(batch.levels, count),
                   sigma=np.repeat(batch.sigma, count), extras={})
