"""Voxels that recorded nothing come back exactly as they were.

A B-mode frame is a fan inside a rectangle of zeros; a CT marks out-of-field voxels with a padding value far
below air; a masked or skull-stripped MR is zero outside the mask. No noise lives there, so denoising can only
add something that was not measured: on a real TRUS frame the network and refinements left the zeros around the
fan at −1.0 on average (−3.9 to +4.1), a grey haze where the scanner wrote black.

Such a region is a large patch of one value, the image's minimum: noise never makes hundreds of neighbouring
voxels exactly equal. Here it is every in-plane connected region of the minimum holding at least
``MIN_REGION_FRACTION`` of its slice (a few dark speckle voxels at zero inside a fan are far smaller and are
denoised as usual). A CT's padding keeps its own rule (:func:`.normalization.ct_padding_value`: every voxel at
the marker), and the network sees air there instead of a wall at −3024 HU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .normalization import ct_padding_value

__all__ = ["AIR_HU", "MIN_REGION_FRACTION", "OutsideField", "find_outside_field"]

AIR_HU = -1000.0  # what the network sees in place of a CT's padding
# Least size of a region of the minimum, as a share of its slice. 0.1 % of a 256 × 256 slice is 66 voxels: a
# 3 × 3 patch of zeros that integer rounding leaves in a noisy MR background is far below it.
MIN_REGION_FRACTION = 0.001


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


def find_outside_field(array: np.ndarray, modality: str) -> OutsideField | None:
    """The voxels of ``array`` (2D or 3D, finite) that recorded nothing, or None when there are none."""
    if modality == "ct":
        padding = ct_padding_value(array)
        if padding is not None:
            return OutsideField(array == np.float32(padding), padding, AIR_HU)
    minimum = array.min()
    at_minimum = array == minimum
    slices = at_minimum.reshape((-1, *array.shape[-2:]))
    least = max(1, int(np.ceil(MIN_REGION_FRACTION * slices[0].size)))
    if np.count_nonzero(at_minimum) < least:
        return None
    mask = np.zeros_like(slices)
    for index, plane in enumerate(slices):
        if np.count_nonzero(plane) < least:
            continue
        labels, count = ndimage.label(plane)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        large = sizes >= least
        large[0] = False
        mask[index] = large[labels]
    if not mask.any():
        return None
    return OutsideField(mask.reshape(array.shape), float(minimum), float(minimum))
