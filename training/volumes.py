"""Training volumes in memory: read through the library, normalised exactly as at inference, with a coarse list
of foreground positions for biased patch sampling."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.estimation.noise_estimation import estimate_noise_sigma
from MedicalDenoiseLib.estimation.robust import fill_non_finite
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer, guess_modality

from .config import DataConfig
from .data import VolumeSource, matches_any
from .errors import DataError

__all__ = ["TrainingVolume", "load_volume", "resolve_modality", "block_average", "BLOCK_AVERAGE_MIN_LENGTH"]

# Foreground positions are kept on a grid this coarse (z, y, x): a few MB at most, and patches are large.
_FOREGROUND_STRIDE = (1, 4, 4)
# Axes shorter than this are never block-averaged: a 20-slice scan keeps its slices.
BLOCK_AVERAGE_MIN_LENGTH = 64


@dataclass
class TrainingVolume:
    """One volume ready for patch sampling.

    Attributes:
        name: the volume's name (path relative to the data folder).
        modality: "ct", "mr" or "us": picks the normalisation and the synthetic noise models.
        image: float32 ``(D, H, W)`` in normalised units (for paired data: the noisy volume).
        target: for paired data, the clean volume normalised like ``image``; else None.
        foreground: int32 ``(N, 3)`` voxel positions above the foreground threshold (coarse grid).
        spacing: (z, y, x) voxel size in mm, for messages.
        noise_level: blind noise SD estimate of ``image`` (normalised units), for the model card.
    """

    name: str
    modality: str
    image: np.ndarray
    target: np.ndarray | None
    foreground: np.ndarray
    spacing: tuple[float, ...]
    noise_level: float = 0.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


def resolve_modality(name: str, tagged: str | None, array: np.ndarray, data: DataConfig) -> str:
    """``data.modality_patterns`` first, then a fixed ``data.modality``, then the DICOM tag or the intensities."""
    for pattern, modality in data.modality_patterns.items():
        if matches_any(name, (pattern,)):
            return modality
    if data.modality != "auto":
        return data.modality
    return guess_modality(array, tagged)


def _as_3d_float(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    return fill_non_finite(array)[0]  # NaN/inf voxels take the median, as the denoiser fills them


def _block_factors(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    return tuple(factor if n >= BLOCK_AVERAGE_MIN_LENGTH else 1 for n in shape)


def block_average(array: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Mean over non-overlapping blocks of ``factors`` voxels; a remainder at an axis' end is dropped."""
    if all(f == 1 for f in factors):
        return array
    kept = tuple(slice(0, n - n % f) for n, f in zip(array.shape, factors))
    trimmed = array[kept]
    blocks = [d for n, f in zip(trimmed.shape, factors) for d in (n // f, f)]
    return trimmed.reshape(blocks).mean(axis=tuple(range(1, 2 * array.ndim, 2)), dtype=np.float64).astype(np.float32)


def load_volume(source: VolumeSource, data: DataConfig) -> TrainingVolume:
    """Reads, normalises and indexes one volume (and its clean partner for paired data).

    The normaliser is fitted on the (noisy) input, as the denoiser does at inference, and applied to the
    clean partner too, so both share one intensity scale. With ``data.block_average`` both are then averaged
    over blocks, and the spacing grows with them.

    Raises:
        InputError: an unreadable file (from the library).
        DataError: a clean partner whose shape differs from its noisy volume.
    """
    volume = read_volume(source.path)
    array = _as_3d_float(volume.array)
    modality = resolve_modality(source.name, volume.modality, array, data)
    normalizer = IntensityNormalizer.fit(array, modality)
    factors = _block_factors(array.shape, data.block_average)
    image = block_average(normalizer.normalize(array), factors)
    target = None
    if source.target is not None:
        clean = _as_3d_float(read_volume(source.target).array)
        if clean.shape != array.shape:
            raise DataError(f"{source.target}: clean volume has shape {clean.shape[::-1]} (x, y, z) but its noisy "
                            f"partner {source.path.name} has {array.shape[::-1]}; pairs must share one voxel grid")
        target = block_average(normalizer.normalize(clean), factors)
    reference = target if target is not None else image
    coarse = reference[:, :: _FOREGROUND_STRIDE[1], :: _FOREGROUND_STRIDE[2]]
    foreground = (np.argwhere(coarse > data.foreground_threshold) * np.array(_FOREGROUND_STRIDE)).astype(np.int32)
    spacing = tuple(volume.geometry.spacing[::-1])
    spacing = spacing if len(spacing) == 3 else (1.0, *spacing)
    spacing = tuple(float(s) * f for s, f in zip(spacing, factors))
    return TrainingVolume(source.name, modality, image, target, foreground, spacing, estimate_noise_sigma(image))
