"""Cleaner targets from real volumes: each one block-averaged, then denoised by BM4D told a low noise SD.

Real volumes carry noise of their own (0.5–3 % of the range, often correlated). Used as targets for synthetic
noise they teach a network that noise of that level is anatomy to keep, and that is the level real scans show,
so the network leaves their grain. Averaging 2-voxel blocks halves the volume's own noise; BM4D (Mäkinen et
al.) is then told a deliberately low SD (:func:`told_sigma`), so it takes some of the rest without the anatomy.
On the project's volumes it removed little more (docs/models.md, autoencoder-v5): treat this as a starting
point for cleaner targets, not a finished recipe.

    python -m training.pseudo_clean DATA_DIR OUT_DIR --include ct_chest_*.nii.gz mr_head_t1_seg3d.nii.gz

writes each volume under its own name into ``OUT_DIR``; train on ``OUT_DIR`` as on any folder. Needs the
``bm4d`` package (``pip install bm4d``), used here only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from MedicalDenoiseLib.errors import MedicalDenoiseError
from MedicalDenoiseLib.evaluation.baselines import bm4d_denoise
from MedicalDenoiseLib.estimation.noise_estimation import estimate_fine_scale_sigma
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.io.writing import write_volume

from .data import find_volumes
from .volumes import BLOCK_AVERAGE_MIN_LENGTH, block_average

__all__ = ["averaged_geometry", "told_sigma", "pseudo_clean", "main"]


def averaged_geometry(geometry: Geometry, factors_zyx: tuple[int, ...]) -> Geometry:
    """The grid of a block-averaged volume: spacing times the factor, first voxel at the first block's centre."""
    factors = factors_zyx[::-1]  # Geometry is (x, y, z)
    size = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=float).reshape(size, size)
    shift = direction @ (np.asarray(geometry.spacing) * (np.asarray(factors) - 1) / 2)
    return Geometry(tuple(float(s * f) for s, f in zip(geometry.spacing, factors)),
                    tuple(float(o + d) for o, d in zip(geometry.origin, shift)), geometry.direction)


def _bm4d(array: np.ndarray, sigma: float) -> np.ndarray:
    try:
        return bm4d_denoise(array, sigma)
    except ImportError as error:
        raise SystemExit("training.pseudo_clean needs the bm4d package: pip install bm4d") from error


def told_sigma(array: np.ndarray, factors: tuple[int, ...]) -> float:
    """The noise SD BM4D is told for ``array`` averaged over blocks of ``factors``: the finest-scale estimate
    of the full-resolution volume, divided by the square root of the voxels per block.

    Deliberately low. Measured on the anatomy-rich training volumes, the full-SD estimate reads texture as
    noise (prostate T2: 4.5 % of the range at full resolution, 9 % once averaged, where the flattest tissue
    varies by well under 2 %), and BM4D told that much smooths the anatomy away; a target that keeps some
    noise costs less than one that lost its anatomy."""
    return estimate_fine_scale_sigma(array) / float(np.sqrt(np.prod(factors)))


def pseudo_clean(volume: Volume, block: int = 2) -> tuple[Volume, float]:
    """The volume block-averaged along every axis of at least 64 voxels, then BM4D-denoised; and the noise SD
    BM4D was told (:func:`told_sigma`, in the volume's units)."""
    array = volume.array.astype(np.float32)
    if array.ndim == 2:
        array = array[None]
    factors = tuple(block if n >= BLOCK_AVERAGE_MIN_LENGTH else 1 for n in array.shape)
    averaged = block_average(array, factors)
    sigma = told_sigma(array, factors)
    cleaned = _bm4d(averaged, sigma) if sigma > 0 else averaged
    geometry = averaged_geometry(volume.geometry, factors[-len(volume.geometry.spacing):])
    cleaned = cleaned.reshape(cleaned.shape[-len(volume.geometry.spacing):])
    return Volume(cleaned, geometry, volume.modality, source=volume.source), sigma


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of real volumes")
    parser.add_argument("out", type=Path, help="folder to write the cleaned volumes to (created)")
    parser.add_argument("--include", nargs="+", default=(), help="names or globs of the volumes to clean (default all)")
    parser.add_argument("--block", type=int, default=2, help="block edge in voxels for the averaging (1: none)")
    args = parser.parse_args(argv)
    try:
        sources = find_volumes(args.data, include=tuple(args.include))
    except MedicalDenoiseError as error:  # a missing folder, no volume matching --include
        print(f"pseudo_clean: error: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        started = time.perf_counter()
        try:
            volume = read_volume(source.path)
        except MedicalDenoiseError as error:  # an unreadable file: one line, the volumes done so far kept
            print(f"pseudo_clean: error: {error}", file=sys.stderr)
            return 1
        cleaned, sigma = pseudo_clean(volume, args.block)
        target = args.out / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_volume(cleaned, target, overwrite=True)
        print(f"{source.name}: {volume.array.shape} → {cleaned.array.shape}, BM4D told σ {sigma:.4g}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
