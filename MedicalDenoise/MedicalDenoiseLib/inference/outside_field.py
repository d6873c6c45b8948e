"""Voxels that recorded nothing come back exactly as they were.

A B-mode frame is a fan inside a rectangle of zeros; a CT marks out-of-field voxels with a padding value far
below air; a masked or skull-stripped MR is zero outside the mask. No noise lives there, so denoising can only
add something that was not measured: on a real TRUS frame the network and refinements left the zeros around the
fan at −1.0 on average (−3.9 to +4.1), a grey haze where the scanner wrote black.

Such a region is a large, solid patch of one value, the image's minimum, reaching the slice's border: noise never
makes hundreds of neighbouring voxels exactly equal. Here it is every in-plane connected region of the minimum that
touches the slice's edge, holds at least ``MIN_REGION_VOXELS`` and ``MIN_REGION_FRACTION`` of its slice, and is
mostly interior (at least half its voxels have their whole 3 × 3 neighbourhood in it). Dark speckle at zero inside
a fan, an anechoic cyst, or noise clipped at the floor of the pixel type (−1024 HU air, half its voxels at the
floor) are none of these and are denoised as usual. A CT's padding keeps its own rule
(:func:`.normalization.ct_padding_value`: every voxel at the marker), and the network sees air there instead of a
wall at −3024 HU. Non-finite voxels are never part of it (they are filled and denoised).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .normalization import ct_padding_value

__all__ = ["AIR_HU", "MIN_REGION_FRACTION", "MIN_REGION_VOXELS", "OutsideField", "find_outside_field"]

AIR_HU = -1000.0  # what the network sees in place of a CT's padding
# Least size of a region of the minimum: this many voxels and this share of its slice (0.1 % of a 512 × 512 slice
# is 263 voxels). A 3 × 3 patch of zeros that integer rounding leaves in a noisy MR background is far below both.
MIN_REGION_VOXELS = 64
MIN_REGION_FRACTION = 0.001
_SOLID = np.ones((3, 3), bool)


@dataclass(frozen=True)
class OutsideField:
    """Where nothing was recorded: ``mask`` (the image's shape), the ``value`` written there, and ``seen_as``,
    the value the network is given there."""

    mask: np.ndarray
    value: float
    seen_as: float

    def hidden(self, array: np.ndarray) -> np.ndarray:
        """``array`` as the network should see it (a copy only when a value changes)."""
        if self.seen_as == self.value:
            return array
        return np.where(self.mask, np.float32(self.seen_as), array)

    def restore_(self, output: np.ndarray) -> np.ndarray:
        """``output`` with the recorded-nothing voxels set back to their value, in place."""
        output[self.mask] = np.float32(self.value)
        return output


def find_outside_field(array: np.ndarray, modality: str, excluded: np.ndarray | None = None) -> OutsideField | None:
    """The voxels of ``array`` (2D or 3D) that recorded nothing, or None when there are none.

    ``excluded``: voxels that cannot be outside (the non-finite ones, already filled), or None.
    """
    if modality == "ct":
        padding = ct_padding_value(array)
        if padding is not None:
            mask = array == np.float32(padding)
            return OutsideField(mask if excluded is None else mask & ~excluded, padding, AIR_HU)
    minimum = array.min()
    at_minimum = array == minimum
    if excluded is not None:
        at_minimum &= ~excluded
    slices = at_minimum.reshape((-1, *array.shape[-2:]))
    least = max(MIN_REGION_VOXELS, int(np.ceil(MIN_REGION_FRACTION * slices[0].size)))
    if np.count_nonzero(at_minimum) < least:
        return None
    mask = np.zeros_like(slices)
    for index, plane in enumerate(slices):
        if np.count_nonzero(plane) >= least:
            mask[index] = _empty_regions(plane, least)
    if not mask.any():
        return None
    return OutsideField(mask.reshape(array.shape), float(minimum), float(minimum))


def _empty_regions(plane: np.ndarray, least: int) -> np.ndarray:
    """The connected regions of ``plane`` that reach its border, hold ``least`` voxels and are mostly interior."""
    labels, count = ndimage.label(plane)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    interior = np.bincount(labels[ndimage.binary_erosion(plane, _SOLID)], minlength=count + 1)
    border = np.zeros(count + 1, bool)
    border[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    keep = border & (sizes >= least) & (2 * interior >= sizes)
    keep[0] = False
    return keep[labels]
