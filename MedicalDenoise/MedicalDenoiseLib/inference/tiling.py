"""Tiled inference: any volume size with bounded memory, the output assembled on the CPU.

Tiles overlap and are blended with a Gaussian weight, so tile borders, where a convolution sees padding,
count little. Tile sizes are shrunk to split each axis evenly, which keeps the extra work from overlap
small (a 256³ volume with 160³ tiles is done as 2×2×2 tiles of 136³, not 3×3×3).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import Cancelled

__all__ = ["tile_starts", "sliding_window_inference"]

Predictor = Callable[[torch.Tensor], torch.Tensor]


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def tile_starts(length: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """The tile size actually used along one axis and the start of each tile.

    Args:
        length: the axis length (already padded to at least ``tile``'s multiple).
        tile: the largest tile size allowed.
        overlap: the least overlap between neighbouring tiles, in voxels.

    Returns:
        ``(size, starts)`` with ``size <= max(tile, length)`` and tiles covering ``[0, length)``.
    """
    if length <= tile:
        return length, [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, math.ceil((length + (count - 1) * overlap) / count))
    last = length - size
    starts = sorted({round(i * last / (count - 1)) for i in range(count)})
    return size, starts


def _axis_weight(n: int, blending: str) -> np.ndarray:
    """One axis of the separable tile weight: a Gaussian centred on the tile, never exactly zero, or flat.

    σ is an eighth of the tile (as in MONAI), so a voxel at a tile's edge, where the network saw padding,
    weighs 1/3000 of one at the centre: wherever another tile covers it, that tile decides.
    """
    if blending == "constant":
        return np.ones(n, dtype=np.float32)
    x = np.arange(n, dtype=np.float32) - (n - 1) / 2
    return np.maximum(np.exp(-0.5 * (x / max(n / 8, 1e-3)) ** 2), 1e-4).astype(np.float32)


def sliding_window_inference(
    volume: np.ndarray,
    predictor: Predictor,
    tile_size: int | Sequence[int] = 160,
    overlap: int | Sequence[int] = 16,
    size_multiple: int | Sequence[int] = 1,
    blending: str = "gaussian",
    device: torch.device | str = "cpu",
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Runs ``predictor`` over overlapping tiles of ``volume`` and blends the results.

    Args:
        volume: ``(D, H, W)`` float32 array on the CPU, or ``(B, D, H, W)``: ``B`` volumes of one shape whose
            tiles at the same place run as one batch.
        predictor: maps a ``(B, 1, d, h, w)`` tensor on ``device`` (``B`` = 1 for a 3D volume) to a tensor of
            the same shape.
        tile_size: the largest tile, one size or one per axis; rounded up to ``size_multiple``.
        overlap: least overlap between tiles in voxels, one value or one per axis; smaller than the tile.
        size_multiple: every tile size is a multiple of this (the network's downsampling factor), one value
            or one per axis; the volume is padded by mirroring to fit and cropped back.
        blending: "gaussian" (weights fall off towards tile borders) or "constant" (plain average).
        device: where the predictor runs; the output is always assembled on the CPU.
        progress: called with the fraction done after each tile.
        cancel: polled before each tile; returning True raises :class:`Cancelled`.

    Returns:
        float32 array of ``volume``'s shape.

    Raises:
        ValueError: for a volume neither 3D nor 4D, bad tile size, overlap or blending.
        Cancelled: when ``cancel()`` returned True.
    """
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be 3D (D, H, W) or a batch (B, D, H, W), got shape {volume.shape}")
    batched = volume.ndim == 4
    batch = volume.shape[0] if batched else 1
    volume = volume if batched else volume[None]
    spatial = volume.shape[1:]
    if blending not in ("gaussian", "constant"):
        raise ValueError(f"blending must be one of gaussian, constant, got {blending!r}")
    tiles = (tile_size,) * 3 if np.isscalar(tile_size) else tuple(tile_size)
    multiples = (size_multiple,) * 3 if np.isscalar(size_multiple) else tuple(int(m) for m in size_multiple)
    if len(multiples) != 3 or min(multiples) < 1:
        raise ValueError(f"size_multiple must be >= 1, one value or one per axis, got {size_multiple}")
    if len(tiles) != 3 or any(t < max(m, 1) for t, m in zip(tiles, multiples)):
        raise ValueError(f"tile_size must be >= {max(multiples)} per axis, got {tile_size}")
    tiles = tuple(_round_up(int(t), m) for t, m in zip(tiles, multiples))

    # Pad to a multiple of the network's factor (and at least one multiple) by mirroring.
    padded_shape = [max(_round_up(n, m), m) for n, m in zip(spatial, multiples)]
    overlaps = (overlap,) * 3 if np.isscalar(overlap) else tuple(overlap)
    if len(overlaps) != 3 or any(o < 0 or o >= t for o, t in zip(overlaps, tiles)):
        raise ValueError(f"overlap must be in [0, tile) voxels on each axis (tiles {tiles}), got {overlap}")
    pad = [(0, 0)] + [(0, p - n) for n, p in zip(spatial, padded_shape)]
    padded = np.pad(volume, pad, mode="symmetric") if any(after for _, after in pad) else volume

    axes = [tile_starts(n, t, o) for n, t, o in zip(padded_shape, tiles, overlaps)]
    sizes = [_round_up(size, m) for (size, _), m in zip(axes, multiples)]
    starts = [[min(s, n - size) for s in st] for (_, st), size, n in zip(axes, sizes, padded_shape)]
    axis_weights = [_axis_weight(size, blending) for size in sizes]
    weight = np.multiply.outer(np.multiply.outer(axis_weights[0], axis_weights[1]), axis_weights[2])
    # Tiles sit on a grid and the weight is separable, so the summed weight is separable too: three
    # short vectors instead of a second full-size buffer.
    axis_totals = []
    for n, size, st, w in zip(padded_shape, sizes, starts, axis_weights):
        total = np.zeros(n, dtype=np.float64)
        for s in st:
            total[s : s + size] += w
        axis_totals.append(total)
    output = np.zeros((batch, *padded_shape), dtype=np.float32)
    positions = list(itertools.product(*starts))
    device = torch.device(device)
    for index, (z, y, x) in enumerate(positions):
        if cancel is not None and cancel():
            raise Cancelled("denoising was cancelled")
        region = (slice(None), slice(z, z + sizes[0]), slice(y, y + sizes[1]), slice(x, x + sizes[2]))
        tile = torch.from_numpy(np.ascontiguousarray(padded[region]))[:, None].to(device)
        result = predictor(tile)[:, 0].float().cpu().numpy()
        output[region] += result * weight
        if progress is not None:
            progress((index + 1) / len(positions))
    plane_total = np.multiply.outer(axis_totals[1], axis_totals[2])
    for z in range(spatial[0]):
        output[:, z] /= (axis_totals[0][z] * plane_total).astype(np.float32)
    output = output[:, : spatial[0], : spatial[1], : spatial[2]]
    return output if batched else output[0]
