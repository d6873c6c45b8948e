"""A voxel array and the geometry that places it in the patient.

Geometry travels beside the array from reading to writing and is never recomputed: the output of every
operation is written on the input's exact grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Geometry", "Volume"]


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid, in SimpleITK's (x, y, z) order.

    Attributes:
        spacing: voxel size along each axis, in mm.
        origin: position of the first voxel's centre, in mm (LPS).
        direction: row-major direction cosine matrix, ``len(spacing) ** 2`` values.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def dimension(self) -> int:
        return len(self.spacing)


@dataclass
class Volume:
    """A scalar image as a numpy array in (z, y, x) order (or (y, x) for a 2D image).

    Attributes:
        array: the voxels; its dtype is the pixel type read from disk.
        geometry: spacing, origin and direction of the grid.
        modality: "ct", "mr", "us" when known from the file's metadata, else None.
        metadata: header fields to carry to the output (for DICOM, the tags of the first slice).
        source: where the image was read from, for messages.
    """

    array: np.ndarray
    geometry: Geometry
    modality: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same image description around new voxels of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape must stay {self.array.shape}, got {array.shape}")
        return replace(self, array=array, metadata=dict(self.metadata))
