"""Procedural clean volumes: piecewise-smooth shapes with sharp edges and small bright or dark spots.

Real scans carry their own noise, so as training targets they teach a network to keep some of it. These
phantoms are exactly noise-free. They teach flat regions to come out flat, edges to stay sharp, and
lesion-sized spots (a few voxels across, low contrast) to survive.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["random_phantom"]


def random_phantom(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A float32 volume in roughly [0, 1] of the given shape (z, y, x)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    # A smooth background: a low-order polynomial ramp plus a very low-frequency field.
    image = np.full(shape, rng.uniform(0.1, 0.5), np.float32)
    for axis, grid in enumerate(grids):
        image += rng.uniform(-0.15, 0.15) * grid / shape[axis]
    coarse = rng.normal(0, 1, tuple(max(2, n // 12) for n in shape)).astype(np.float32)
    image += 0.05 * ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse.shape)], order=3)[
        : shape[0], : shape[1], : shape[2]]
    # Ellipsoids of constant or graded intensity, some nested.
    for _ in range(rng.integers(4, 12)):
        centre = [rng.uniform(0, n) for n in shape]
        radii = [rng.uniform(3, max(4, n / 2.5)) for n in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) < 1
        value = rng.uniform(0.0, 1.0)
        if rng.random() < 0.3:
            image[inside] = image[inside] * 0.5 + value * 0.5
        else:
            image[inside] = value
    # Small spots of radius 1-3 voxels at low contrast: the details a radiologist looks for.
    for _ in range(rng.integers(2, 10)):
        centre = [rng.uniform(0, n) for n in shape]
        radius = rng.uniform(1.0, 3.0)
        inside = sum((g - c) ** 2 for g, c in zip(grids, centre)) < radius**2
        image[inside] += rng.choice([-1, 1]) * rng.uniform(0.03, 0.2)
    # Partial-volume edges, as an imaging system's point spread gives them.
    image = ndimage.gaussian_filter(image, rng.uniform(0.3, 0.8))
    return np.clip(image, 0.0, 1.2).astype(np.float32)
