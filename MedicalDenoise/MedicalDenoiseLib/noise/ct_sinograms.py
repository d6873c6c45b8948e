"""Line integrals of attenuation through each axial slice of a CT volume: what the detector saw at full dose.

Projection-domain noise needs, for every ray through a training patch, the attenuation along the *whole*
ray, which runs through the rest of the slice. :class:`SliceSinograms` projects every slice of the volume once,
on first use, and keeps the result (~0.1 MB per slice, float16); every later noise draw only samples it. The
projections are computed on a grid ``downsample`` times coarser: the photon count ``I0·exp(−p)`` that sets
the noise varies smoothly along the detector, and the noise itself is drawn at full resolution.

Parallel-beam geometry with a pixel-driven projector (:func:`~MedicalDenoiseLib.noise.parallel_beam.project`),
not the fan beam of a clinical scanner: the path lengths, and so the noise that grows behind wide or dense
anatomy, are the same; the fan's magnification is not modelled. The projector agrees with scikit-image's
``radon`` to within a few per cent and projects a whole volume in one sparse product, about 30 times faster.
"""
from __future__ import annotations

import math

import numpy as np

from .parallel_beam import detector_bins, project

__all__ = ["MU_WATER_PER_MM", "attenuation_per_mm", "SliceSinograms"]

MU_WATER_PER_MM = 0.0195
"""Linear attenuation of water at ~70 keV, the effective energy of a 120 kVp spectrum (NIST XCOM: 0.193/cm)."""

_SLICES_PER_BLOCK = 32  # slices projected together: one sparse product serves them all


def attenuation_per_mm(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Linear attenuation in 1/mm from Hounsfield units, ``μ = μ_water·(1 + HU/1000)``, never negative."""
    return np.clip(mu_water * (1.0 + np.asarray(hu, dtype=np.float32) / 1000.0), 0.0, None).astype(np.float32)


class SliceSinograms:
    """Full-dose line integrals ``p(θ, t)`` (dimensionless) of every axial slice of one volume.

    Args:
        volume: ``(D, H, W)`` or ``(H, W)`` array; kept by reference, not copied.
        pixel_size_mm: in-plane voxel size in mm (square pixels assumed).
        views: projection angles over 180°; draws at other angles interpolate between them.
        downsample: in-plane reduction before projecting (None: 2 for slices of 256 pixels or more, else 1).
        mu_water: attenuation of water in 1/mm.
        hu_offset, hu_per_unit: ``HU = hu_offset + hu_per_unit · value`` (``(-1000, 2000)`` for the library's
            normalised CT, ``(0, 1)`` for an image in HU).
        padding_below_hu: voxels below this are outside the scanner's field of view (−3024, −32768 …) and
            attenuate nothing.

    Attributes:
        centre: ``(y, x)`` of the rotation centre in the volume's pixel coordinates (the slice's centre).
    """

    def __init__(self, volume: np.ndarray, pixel_size_mm: float, *, views: int = 180, downsample: int | None = None,
                 mu_water: float = MU_WATER_PER_MM, hu_offset: float = 0.0, hu_per_unit: float = 1.0,
                 padding_below_hu: float = -1500.0) -> None:
        volume = np.asarray(volume)
        if volume.ndim not in (2, 3) or min(volume.shape) < 1:
            raise ValueError(f"volume must be 2D (H, W) or 3D (D, H, W), got shape {volume.shape}")
        if not pixel_size_mm > 0:
            raise ValueError(f"pixel_size_mm must be > 0, got {pixel_size_mm}")
        if views < 2:
            raise ValueError(f"views must be >= 2, got {views}")
        if downsample is not None and downsample < 1:
            raise ValueError(f"downsample must be >= 1 or None, got {downsample}")
        self.volume = volume if volume.ndim == 3 else volume[None]
        self.pixel_size_mm = float(pixel_size_mm)
        self.views = int(views)
        height, width = self.volume.shape[1:]
        self.downsample = d = int(downsample or (2 if min(height, width) >= 256 else 1))
        self.mu_water, self.hu_offset, self.hu_per_unit = float(mu_water), float(hu_offset), float(hu_per_unit)
        self.padding_below_hu = float(padding_below_hu)
        self._coarse = (math.ceil(height / d), math.ceil(width / d))
        self._bins = detector_bins(self._coarse)
        # Coarse pixel i covers original pixels d·i … d·i + d − 1: its centre is at d·i + (d − 1)/2.
        self.centre = ((d * self._coarse[0] - 1) / 2, (d * self._coarse[1] - 1) / 2)
        self._table: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of the volume."""
        return self.volume.shape

    def hounsfield(self, values: np.ndarray) -> np.ndarray:
        """The volume's units converted to HU (float32)."""
        return (self.hu_offset + self.hu_per_unit * np.asarray(values, dtype=np.float32)).astype(np.float32)

    def _mu_per_pixel(self, slices: slice) -> np.ndarray:
        """``(S, coarse H, coarse W)`` attenuation per original pixel length, field-of-view padding set to 0."""
        hu = self.hounsfield(self.volume[slices])
        mu = attenuation_per_mm(hu, self.mu_water) * np.float32(self.pixel_size_mm)
        mu[hu < self.padding_below_hu] = 0.0
        d = self.downsample
        if d == 1:
            return mu
        padded = np.zeros((mu.shape[0], self._coarse[0] * d, self._coarse[1] * d), np.float32)
        padded[:, : mu.shape[1], : mu.shape[2]] = mu
        return padded.reshape(mu.shape[0], self._coarse[0], d, self._coarse[1], d).mean(axis=(2, 4))

    def precompute(self) -> "SliceSinograms":
        """Projects every slice now rather than on the first draw (~3 s for 141 slices of 512²); returns
        ``self``."""
        if self._table is not None:
            return self
        table = np.empty((self.shape[0], self.views + 1, self._bins), np.float16)
        for start in range(0, self.shape[0], _SLICES_PER_BLOCK):
            block = slice(start, min(self.shape[0], start + _SLICES_PER_BLOCK))
            # × d: the coarse projector sums coarse pixels, each d original pixels long.
            sinograms = project(self._mu_per_pixel(block), self.views, self._bins) * np.float32(self.downsample)
            table[block, :-1] = sinograms
            table[block, -1] = sinograms[:, 0, ::-1]  # p(π, t) = p(0, −t): interpolation wraps past the last view
        self._table = table
        return self

    def sample(self, slices: np.ndarray, theta: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Line integrals at any angles and detector positions, interpolated bilinearly.

        Args:
            slices: ``(S,)`` slice indices into the volume.
            theta: ``(V,)`` angles in radians, in ``[0, π)``.
            t: ``(V, T)`` detector positions in original pixels from the rotation centre.

        Returns:
            float32 ``(S, V, T)``.
        """
        table = self.precompute()._table[np.asarray(slices, dtype=np.int64)].astype(np.float32)
        a = np.asarray(theta) / (np.pi / self.views)
        a0 = np.clip(np.floor(a).astype(np.int64), 0, self.views - 1)[:, None]
        wa = (a[:, None] - a0).astype(np.float32)
        u = np.asarray(t) / self.downsample + self._bins // 2
        u0 = np.clip(np.floor(u).astype(np.int64), 0, self._bins - 2)
        wu = np.clip(u - u0, 0.0, 1.0).astype(np.float32)

        def along_t(rows: np.ndarray) -> np.ndarray:
            left = table[:, rows, u0]
            return left + wu * (table[:, rows, u0 + 1] - left)

        left = along_t(a0)
        return left + wa * (along_t(a0 + 1) - left)
