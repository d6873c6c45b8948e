"""Patch shapes that fit each volume and the network, and random patch positions biased to the foreground.

Patch sizes must be multiples of the network's ``size_multiple`` (in-plane twice that in self-supervised
mode, whose sub-images are half as wide). A volume with fewer slices than the patch (thick-slice CT or MR,
e.g. 19-25 slices) gets a flatter, wider patch of about the same voxel count; a volume narrower in-plane
than the patch is left out. A batch mixes volumes: its shape is the smallest of their patch shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, DataError
from .volumes import TrainingVolume

__all__ = ["PatchRef", "PatchSampler", "fit_patch_shape", "check_patch_size", "extract"]


def check_patch_size(patch_size: tuple[int, ...], multiples: tuple[int, ...], why: str) -> None:
    """Raises ConfigError unless each patch extent is a positive multiple of its axis' multiple."""
    if any(p % m or p < m for p, m in zip(patch_size, multiples)):
        raise ConfigError(f"data.patch_size must be multiples of {list(multiples)} (z, y, x) ({why}), "
                          f"got {list(patch_size)}")


def fit_patch_shape(
    desired: tuple[int, ...], extent: tuple[int, ...], multiples: tuple[int, ...]
) -> tuple[int, int, int] | None:
    """The patch for a volume of ``extent`` (z, y, x), or None when none fits.

    ``desired`` when it fits. With fewer slices than ``desired[0]``, the depth shrinks to what the volume has
    (rounded down to a multiple) and the in-plane sides grow by ``sqrt(desired depth / depth)`` up to the
    volume's size, keeping about the same number of voxels.
    """
    dz, dy, dx = desired
    mz, my, mx = multiples
    if extent[1] < dy or extent[2] < dx:
        return None
    if extent[0] >= dz:
        return dz, dy, dx
    depth = extent[0] // mz * mz
    if depth < mz:
        return None
    grow = math.sqrt(dz / depth)
    side_y = min(int(dy * grow) // my * my, extent[1] // my * my)
    side_x = min(int(dx * grow) // mx * mx, extent[2] // mx * mx)
    return depth, max(side_y, dy), max(side_x, dx)


@dataclass(frozen=True)
class PatchRef:
    """Where one patch lies: the volume's index and the first voxel (z, y, x)."""

    volume: int
    start: tuple[int, int, int]


class PatchSampler:
    """Draws batches of patch positions from a list of volumes.

    Args:
        volumes: the training volumes.
        patch_size: the desired (z, y, x) patch.
        multiples: each patch extent must be a multiple of these (z, y, x).
        foreground_probability: chance that a patch is centred on a foreground voxel.

    Raises:
        DataError: when the patch fits in no volume.
    """

    def __init__(
        self,
        volumes: list[TrainingVolume],
        patch_size: tuple[int, ...],
        multiples: tuple[int, ...],
        foreground_probability: float,
    ) -> None:
        self.volumes = volumes
        self.shapes = [fit_patch_shape(tuple(patch_size), v.shape, multiples) for v in volumes]
        self.usable = [i for i, s in enumerate(self.shapes) if s is not None]
        self.skipped = [v.name for v, s in zip(volumes, self.shapes) if s is None]
        self.foreground_probability = foreground_probability
        if not self.usable:
            largest = max((v.shape for v in volumes), key=lambda s: int(np.prod(s)))
            raise DataError(
                f"data.patch_size {list(patch_size)} (z, y, x) is larger than every training volume (largest "
                f"{list(largest)}; thin volumes may lose slices but must be at least as wide in-plane); lower "
                "data.patch_size"
            )

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[tuple[int, int, int], list[PatchRef]]:
        """The batch's common patch shape and ``batch_size`` positions (volumes drawn uniformly)."""
        chosen = [self.usable[int(rng.integers(len(self.usable)))] for _ in range(batch_size)]
        shape = tuple(min(self.shapes[i][axis] for i in chosen) for axis in range(3))  # type: ignore[index]
        refs = [PatchRef(i, self._start(self.volumes[i], shape, rng)) for i in chosen]
        return shape, refs  # type: ignore[return-value]

    def _start(self, volume: TrainingVolume, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, int, int]:
        extent = volume.shape
        if len(volume.foreground) and rng.random() < self.foreground_probability:
            centre = volume.foreground[int(rng.integers(len(volume.foreground)))]
            start = (int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, shape, extent))
            return tuple(start)  # type: ignore[return-value]
        return tuple(int(rng.integers(0, n - s + 1)) for s, n in zip(shape, extent))  # type: ignore[return-value]


def extract(array: np.ndarray, ref: PatchRef, shape: tuple[int, ...]) -> np.ndarray:
    """The patch of ``array`` at ``ref`` (a view)."""
    return array[tuple(slice(b, b + s) for b, s in zip(ref.start, shape))]
