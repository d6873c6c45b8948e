"""Side-by-side PNG previews (noisy | denoised | residual | clean) without matplotlib.

The PNG is written through SimpleITK, already a dependency, so previews cost no new package. One pixel per
voxel (the physical aspect ratio is ignored); panels are the axial middle slices, left to right in the given
order, separated by a 4-pixel black gap. There are no text labels in the image: :func:`comparison_labels`
gives the column names for the caller to print. :func:`comparison_grid_png` lays panels out in rows (e.g.
each method's output above its residual), with every residual panel in one shared symmetric window.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError
from ..estimation.robust import mad_sd
from ..io.atomic import atomic_file

__all__ = ["middle_slice", "comparison_png", "comparison_grid_png", "comparison_labels"]

GAP_PX = 4
# Residuals are shown at ±3 robust SD so noise fills the grey range and any structure stands out.
RESIDUAL_HALF_WIDTH_SD = 3.0

Panel = Tuple[str, np.ndarray]
GridCell = Optional[Panel]  # None leaves a black cell


def middle_slice(array: np.ndarray) -> np.ndarray:
    """The axial middle slice of a volume.

    Args:
        array: shape (z, y, x), or (y, x) which is returned unchanged.

    Returns:
        ``array[z // 2]``, shape (y, x); for a (1, y, x) volume its only slice.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[0] > 0:
        return array[array.shape[0] // 2]
    raise ValueError(f"array must be 2D (y, x) or 3D (z, y, x), got shape {array.shape}")


def _is_residual(label: str) -> bool:
    return label.strip().lower().startswith("residual")


def _robust_sd(values: np.ndarray) -> float:
    """SD from the median absolute deviation of the non-zero values, falling back to the plain SD, then 1.

    Exact zeros are voxels the denoiser left untouched (e.g. masked background); counting them would shrink
    the MAD towards 0 and saturate the panel.
    """
    finite = values[np.isfinite(values) & (values != 0)]
    if finite.size == 0:
        return 1.0
    sd = mad_sd(finite)
    if sd <= 0:
        sd = float(finite.std())
    return sd if sd > 0 else 1.0


def _to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly to [0, 255], clipping outside; NaN shows as black."""
    scaled = (np.nan_to_num(image.astype(np.float64), nan=low) - low) / (high - low)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _image_window(slices: list[np.ndarray], labels: list[str]) -> tuple[float, float]:
    """1st-99th percentile of the first non-residual panel (all panels residual: of the first one)."""
    first = next((s for s, label in zip(slices, labels) if not _is_residual(label)), slices[0])
    finite = first[np.isfinite(first)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, [1, 99]))
    return (low, high) if high > low else (low, low + 1.0)


def comparison_labels(panels: Sequence[Panel]) -> str:
    """The panel labels in PNG column order, e.g. ``"noisy | denoised | residual | clean"``."""
    return " | ".join(label for label, _ in panels)


def comparison_png(path: str | os.PathLike, panels: Sequence[Panel],
                   window: tuple[float, float] | None = None) -> Path:
    """Write the middle slices of several images side by side as one greyscale PNG.

    Image panels share one intensity window so brightness is comparable across them. Panels whose label
    starts with "residual" get their own symmetric window ±3 robust SD around 0, so a zero residual is
    mid-grey (128) and positive / negative residuals are lighter / darker. Panels of different heights are
    top-aligned on black. The file is written to a temporary name in the same folder and renamed, so a
    reader never sees half a PNG.

    Args:
        path: output file, ending in ``.png``; its folder must exist.
        panels: ``(label, array)`` pairs, each array of shape (z, y, x) or (y, x).
        window: ``(low, high)`` intensity window for the image panels; default: the 1st-99th percentile of
            the first image panel's middle slice.

    Returns:
        The path written.

    Raises:
        ValueError: no panels, an array that is not 2D/3D, a bad window or a path not ending in ``.png``.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if not panels:
        raise ValueError("panels must hold at least one (label, array) pair, got none")
    labels = [label for label, _ in panels]
    slices = [middle_slice(array) for _, array in panels]
    if window is None:
        window = _image_window(slices, labels)
    low, high = (float(v) for v in window)
    if not high > low:
        raise ValueError(f"window must be (low, high) with high > low, got {tuple(window)}")

    tiles = []
    for label, image in zip(labels, slices):
        if _is_residual(label):
            half_width = RESIDUAL_HALF_WIDTH_SD * _robust_sd(image.astype(np.float64))
            tiles.append(_to_uint8(image, -half_width, half_width))
        else:
            tiles.append(_to_uint8(image, low, high))

    height = max(tile.shape[0] for tile in tiles)
    width = sum(tile.shape[1] for tile in tiles) + GAP_PX * (len(tiles) - 1)
    canvas = np.zeros((height, width), dtype=np.uint8)
    column = 0
    for tile in tiles:
        canvas[: tile.shape[0], column: column + tile.shape[1]] = tile
        column += tile.shape[1] + GAP_PX

    _write_atomically(canvas, path)
    return path


def comparison_grid_png(path: str | os.PathLike, rows: Sequence[Sequence[GridCell]],
                        window: tuple[float, float] | None = None,
                        residual_half_width: float | None = None) -> Path:
    """Write middle slices as a grid: one PNG row per sequence in ``rows``, columns aligned.

    Meant for "each method above its residual": row 1 the images, row 2 ``noisy − output`` under each. All
    image panels share one window, as in :func:`comparison_png`. Unlike there, every residual panel (label
    starting with "residual") shares *one* symmetric window ``±residual_half_width`` around 0 (mid-grey), so a
    method that removed more, or removed anatomy, shows a stronger residual than one that removed less. Cells
    are top-left aligned in a column as wide as its widest panel and a row as tall as its tallest, with
    4-pixel black gaps; ``None`` cells stay black.

    Args:
        path: output file, ending in ``.png``; its folder must exist.
        rows: sequences of ``(label, array)`` or None; arrays of shape (z, y, x) or (y, x).
        window: ``(low, high)`` for the image panels; default: the 1st-99th percentile of the first image
            panel's middle slice.
        residual_half_width: the residual window's half width in intensity units; default: 3 robust SD of the
            first residual panel (pass e.g. 3 × the noise SD to compare residuals with the noise added).

    Returns:
        The path written.

    Raises:
        ValueError: no panels, an array that is not 2D/3D, a bad window or half width, or a path not ending
            in ``.png``.
        OutputError: the file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    cells = [[None if cell is None else (cell[0], middle_slice(cell[1])) for cell in row] for row in rows]
    present = [cell for row in cells for cell in row if cell is not None]
    if not present:
        raise ValueError("rows must hold at least one (label, array) pair, got none")
    labels = [label for label, _ in present]
    slices = [image for _, image in present]
    low, high = (float(v) for v in (window if window is not None else _image_window(slices, labels)))
    if not high > low:
        raise ValueError(f"window must be (low, high) with high > low, got {(low, high)}")
    if residual_half_width is None:
        first = next((image for label, image in present if _is_residual(label)), None)
        residual_half_width = 1.0 if first is None else RESIDUAL_HALF_WIDTH_SD * _robust_sd(first.astype(np.float64))
    if not (residual_half_width > 0 and np.isfinite(residual_half_width)):
        raise ValueError(f"residual_half_width must be a finite number > 0, got {residual_half_width}")

    def tile(cell: tuple[str, np.ndarray]) -> np.ndarray:
        label, image = cell
        if _is_residual(label):
            return _to_uint8(image, -residual_half_width, residual_half_width)
        return _to_uint8(image, low, high)

    tiles = [[None if cell is None else tile(cell) for cell in row] for row in cells]
    n_columns = max(len(row) for row in tiles)
    widths = [max((row[c].shape[1] for row in tiles if c < len(row) and row[c] is not None), default=0)
              for c in range(n_columns)]
    heights = [max((t.shape[0] for t in row if t is not None), default=0) for row in tiles]
    canvas = np.zeros((sum(heights) + GAP_PX * (len(heights) - 1), sum(widths) + GAP_PX * (n_columns - 1)),
                      dtype=np.uint8)
    top = 0
    for row, height in zip(tiles, heights):
        left = 0
        for column, t in enumerate(row):
            if t is not None:
                canvas[top: top + t.shape[0], left: left + t.shape[1]] = t
            left += widths[column] + GAP_PX
        top += height + GAP_PX
    _write_atomically(canvas, path)
    return path


def _write_atomically(canvas: np.ndarray, path: Path) -> None:
    """Writes a uint8 (y, x) array as PNG; a reader never sees half a file."""
    try:
        with atomic_file(path) as temporary:
            sitk.WriteImage(sitk.GetImageFromArray(canvas, isVector=False), str(temporary))
    except (OSError, RuntimeError) as error:
        raise OutputError(f"{path}: cannot write the preview: {getattr(error, 'strerror', None) or error}") from error
