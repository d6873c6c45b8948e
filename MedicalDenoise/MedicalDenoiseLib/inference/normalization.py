"""Per-modality intensity normalisation, undone exactly on output.

CT keeps its physical meaning: Hounsfield units map linearly so that air (−1000 HU) is 0 and +1000 HU is 1,
the same for every scan, so a noise level in HU means the same to the network everywhere. MR and
ultrasound have no absolute scale: they are divided by a robust upper percentile of the signal (zero stays
zero, which Rician statistics need), or shifted by a low percentile first when the image has negatives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MODALITIES", "IntensityNormalizer", "guess_modality", "ct_padding_value"]

MODALITIES = ("ct", "mr", "us")

_CT_OFFSET = -1000.0
_CT_SCALE = 2000.0
_UPPER_PERCENTILE = 99.5
_LOWER_PERCENTILE = 0.5
# CT scanners mark voxels outside the reconstructed field with one value far below air (−1024 HU is air's
# floor; −2000, −3024 and −32768 are common markers).
_PADDING_BELOW = -1500.0
_PADDING_MIN_FRACTION = 0.001
_MAX_SAMPLES = 1 << 22  # percentiles from at most ~4 M evenly strided voxels: same answer, far less memory


def _finite_sample(array: np.ndarray) -> np.ndarray:
    """A flat, evenly strided sample of the finite voxels (all of them for volumes up to ~4 M voxels)."""
    flat = np.asarray(array).reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    sample = flat[::step]
    return sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample


def ct_padding_value(array: np.ndarray) -> float | None:
    """The value marking a CT's out-of-field voxels: the minimum, when it lies far below air (≤ −1500) and
    fills at least 0.1 % of the image; None when there is no such marker."""
    sample = _finite_sample(array)
    if sample.size == 0:
        return None
    minimum = float(sample.min())
    if minimum > _PADDING_BELOW or np.count_nonzero(sample == minimum) < _PADDING_MIN_FRACTION * sample.size:
        return None
    return minimum


def guess_modality(array: np.ndarray, tagged: str | None = None) -> str:
    """The modality to normalise for: the file's tag when known; else "us" for 8-bit images (B-mode frames are
    stored so; CT needs signed values beyond 255 and MR is stored in 12 to 16 bits); else CT when the
    intensities look like Hounsfield units (air below −500 and tissue above it, out-of-field padding left
    out); else "mr" (percentile scaling).
    """
    if tagged in MODALITIES:
        return tagged
    if array.dtype == np.uint8:
        return "us"
    finite = _finite_sample(array)
    padding = ct_padding_value(finite)
    if padding is not None:
        finite = finite[finite != padding]
    if finite.size == 0:
        return "mr"
    lowest, low, high = np.percentile(finite, [0.1, 1, 99])
    # Hounsfield units: air below −500, tissue above −200, and (a few stray voxels aside) nothing far below air.
    return "ct" if low < -500 and high > -200 and lowest >= -4000 else "mr"


@dataclass(frozen=True)
class IntensityNormalizer:
    """``normalised = (image − offset) / scale`` and back.

    Attributes:
        modality: what the parameters were fitted for.
        offset, scale: the linear map, in the image's units.
    """

    modality: str
    offset: float
    scale: float

    @classmethod
    def fit(cls, array: np.ndarray, modality: str) -> "IntensityNormalizer":
        """Parameters for ``array`` (non-finite voxels ignored).

        Raises:
            ValueError: for an unknown modality, listing the valid ones.
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
        if modality == "ct":
            return cls(modality, _CT_OFFSET, _CT_SCALE)
        values = _finite_sample(array)
        if values.size == 0:
            return cls(modality, 0.0, 1.0)
        minimum = float(values.min())
        offset = 0.0 if minimum >= 0 else float(np.percentile(values, _LOWER_PERCENTILE))
        signal = values[values != 0] if minimum >= 0 else values
        if signal.size == 0:
            return cls(modality, offset, 1.0)
        scale = float(np.percentile(signal, _UPPER_PERCENTILE)) - offset
        if not np.isfinite(scale) or scale <= 0:
            # Constant or nearly constant signal: any positive scale keeps the map invertible.
            scale = max(abs(float(values.max()) - offset), 1.0)
        return cls(modality, offset, scale)

    def normalize(self, array: np.ndarray) -> np.ndarray:
        """float32 copy in normalised units (computed in float32: one copy of the volume, no more)."""
        out = np.array(array, dtype=np.float32, copy=True)
        out -= np.float32(self.offset)
        out /= np.float32(self.scale)
        return out

    def denormalize_(self, array: np.ndarray) -> np.ndarray:
        """Maps a float32 array in normalised units back to the image's units, in place (a large output is
        not copied again); returns it. The writer rounds and clips to the input's pixel type."""
        array *= np.float32(self.scale)
        array += np.float32(self.offset)
        return array

    def to_dict(self) -> dict:
        return {"modality": self.modality, "offset": self.offset, "scale": self.scale}
