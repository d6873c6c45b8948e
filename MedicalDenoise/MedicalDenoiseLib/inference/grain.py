"""How wide the noise grain is, and the sub-lattice strides that make it white.

Every voxel ``s`` apart along an axis carries noise correlated by the noise autocorrelation at lag ``s``; so the
noise of a sub-lattice of stride ``s`` is near white once that correlation is small. Per in-plane axis the stride
is the smallest ``s`` (1–4) whose lag-``s`` correlation, read from the estimator's autocorrelation kernel
(:class:`~.noise_estimation.NoiseEstimate`), is at most ``WHITE_ENOUGH``. The rule is signed: a negative
correlation (zero-filled k-space's sinc, the FBP ramp) leaves noise finer than white on the sub-lattice, which a
white-noise network removes best, and a stride wider than needed only aliases more anatomy.

Through-plane only the lag-1 correlation of the in-plane fit residuals is measured, and anatomy shared by
neighbouring slices adds to it (0.3–0.4 on a 1 mm brain acquired with 80 % of k-space through-plane, where a
stride of 2 through-plane cost 0.4 dB and removed more anatomy), so slices are split only when that correlation
is strong (interpolated or reformatted slices).

A kernel read from flat patches can mistake smooth anatomy for correlated noise where the noise is faint (a
smooth brain template with 1-3 % white noise reads lag-1 0.1-0.5 and slowly falling). So the grain is confirmed
where it counts, on the sub-lattice itself: its finest-scale noise must be at least ``COARSER_ON_SUBLATTICE`` times
the whole grid's. For white noise the two are equal (the ratio reads 1.1-1.3 at 2-5 % on the template, anatomy
adding the rest); grain leaves most of its power out of the finest scale of the grid but not of the sub-lattice
(1.8 for FBP CT, 2.1-7 for MR zero-filled to 80-50 % of k-space, 1.5-5 on the real MR, CT and B-mode scans).

The measured stride is reported, but on its own the denoiser uses at most ``AUTO_MAX_STRIDE``: every other
voxel already aliases some fine anatomy that the network then reads as noise, and wider strides alias far more.
Measured on real scans with small low-contrast lesions inserted (docs/benchmarks.md, sublattice section): the
interpolated 3D chest MR keeps 58 % of the lesions' amplitude on 2×2 sub-grids and 43 % on the 3×4 its grain
asks for, with the same noise left (0.55 / 0.52); the TRUS B-mode frame 87 % on 2×2 against 83 % on 2×4. The
user may ask for wider strides (``grain``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..estimation.noise_estimation import NoiseEstimate, as_volume, estimate_fine_scale_sigma
from .sublattice import Strides

__all__ = ["WHITE_ENOUGH", "MAX_STRIDE", "AUTO_MAX_STRIDE", "COARSER_ON_SUBLATTICE", "GRAIN_KINDS", "Grain", "measure_grain", "learned_grain", "parse_grain", "describe_strides"]

WHITE_ENOUGH = 0.1  # lag-s correlation at or below which a sub-lattice's noise counts as white
MAX_STRIDE = 4
AUTO_MAX_STRIDE = 2
COARSER_ON_SUBLATTICE = 1.4
# Noise kinds whose grain a model learns to remove on the whole grid: such a model runs whole under "auto"
# (on sub-lattices it would remove its grain twice, and texture with it).
GRAIN_KINDS = frozenset({"ct", "ct-projection", "mr-kspace", "us-speckle"})
_THROUGH_PLANE = 0.5  # lag-1 correlation between slices above which slices are split in two
_MIN_SLICES = 8  # thinner volumes keep every slice together


@dataclass(frozen=True)
class Grain:
    """The grain measured in an image and the strides chosen for it.

    Attributes:
        strides: ``(z, y, x)`` sub-lattice strides used; ``(1, 1, 1)`` runs the whole image as it is.
        measured: the strides that would make the noise white (the rule above, before the cap).
        correlation: the noise correlation at lags 1..4 along y and along x (empty when not measured).
        correlation_z: lag-1 correlation between slices (None when not measured).
        chosen_by: "measured"; "user"; or "model" (a model trained on grain runs whole).
        confirmed: for a measured grain, whether the sub-lattice confirmed it (False: the kernel's correlation
            was read as anatomy, see above).
    """

    strides: Strides
    measured: Strides | None = None
    correlation: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    correlation_z: float | None = None
    chosen_by: str = "measured"
    confirmed: bool = True

    @property
    def whole(self) -> bool:
        """Whether the image runs whole (white noise, or nothing measurable)."""
        return self.strides == (1, 1, 1)

    def describe(self) -> str:
        """One line for the user: what was measured and what was done."""
        how = describe_strides(self.strides)
        if self.chosen_by == "user":
            return f"grain set to {'×'.join(map(str, self.strides))} (z×y×x): {how}"
        if self.chosen_by == "model":
            return f"model trained on scanner grain: {how}"
        if not self.correlation[0]:
            return f"noise grain not measurable: {how}"
        lag1 = max(self.correlation[0][0], self.correlation[1][0])
        if not self.confirmed:
            return (f"neighbour correlation {lag1:.2f} in flat patches, but every other voxel's noise is no coarser: "
                    f"read as anatomy, {how}")
        if self.whole:
            return f"noise nearly white (neighbour correlation {lag1:.2f}): {how}"
        width = max((self.measured or self.strides)[1:])
        capped = " (wider sub-grids would cost anatomy; --grain sets them)" if self.measured != self.strides else ""
        return f"grain ≈ {width} voxels in-plane (neighbour correlation {lag1:.2f}): {how}{capped}"


def describe_strides(strides: Strides) -> str:
    """``denoised on 2×2 sub-grids in-plane`` (``… and 2 sub-grids through-plane``), or ``denoised whole``."""
    if tuple(strides) == (1, 1, 1):
        return "denoised whole"
    text = f"denoised on {strides[1]}×{strides[2]} sub-grids in-plane"
    return text + (f" and {strides[0]} sub-grids through-plane" if strides[0] > 1 else "")


def _stride(correlations: tuple[float, ...]) -> int:
    for lag, value in enumerate(correlations, start=1):
        if value <= WHITE_ENOUGH:
            return lag
    return MAX_STRIDE


def measure_grain(estimate: NoiseEstimate, image: np.ndarray) -> Grain:
    """The strides for an image whose noise was estimated.

    Args:
        estimate: the blind estimate of the image's noise (its autocorrelation kernel).
        image: the image, ``(H, W)`` or ``(D, H, W)``.

    Returns:
        The grain; its strides are ``(1, 1, 1)`` when the kernel could not be measured (no flat patch) or the noise is white.
    """
    if estimate.kernel is None or estimate.patches == 0:
        return Grain((1, 1, 1))
    kernel = estimate.kernel
    c = kernel.shape[0] // 2
    lags = range(1, min(MAX_STRIDE, c) + 1)
    along_y = tuple(float(kernel[c + lag, c]) for lag in lags)
    along_x = tuple(float(kernel[c, c + lag]) for lag in lags)
    shape = image.shape
    depth = shape[0] if len(shape) == 3 else 1
    z = estimate.correlation_z
    stride_z = 2 if z is not None and z > _THROUGH_PLANE and depth >= _MIN_SLICES else 1
    # A sub-lattice needs room for the network: never narrower than 16 voxels in-plane.
    height, width = shape[-2:]
    measured = (stride_z, min(_stride(along_y), max(1, height // 16)), min(_stride(along_x), max(1, width // 16)))
    strides = tuple(min(s, AUTO_MAX_STRIDE) for s in measured)
    if strides != (1, 1, 1) and not _coarser_on_sublattice(image, strides, estimate.fine_scale_sigma):
        return Grain((1, 1, 1), (1, 1, 1), (along_y, along_x), z, confirmed=False)
    return Grain(strides, measured, (along_y, along_x), z)


def learned_grain(noise_kinds: list[str]) -> bool:
    """Whether a model trained on these noise kinds learned scanner grain (it then runs whole under auto)."""
    return bool(GRAIN_KINDS.intersection(noise_kinds))


def _coarser_on_sublattice(image: np.ndarray, strides: Strides, fine_scale_sd: float) -> bool:
    """Whether the first sub-lattice's finest-scale noise is clearly above the whole grid's (a strided view:
    nothing is copied beyond the slices the estimate reads)."""
    if fine_scale_sd <= 0:
        return False
    volume = as_volume(image)
    sub = volume[:: strides[0], :: strides[1], :: strides[2]]
    return estimate_fine_scale_sigma(sub) >= COARSER_ON_SUBLATTICE * fine_scale_sd


def parse_grain(value: str | int | tuple[int, ...] | None) -> Strides | None:
    """``auto`` (None: measure it), one stride for both in-plane axes (``2``), or ``z,y,x`` (``1,2,2``).

    Raises:
        ValueError: naming what is accepted.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) == 1:
        numbers = (1, numbers[0], numbers[0])
    if len(numbers) != 3 or not all(1 <= n <= MAX_STRIDE for n in numbers):
        raise ValueError(f"grain must be auto, one stride 1-{MAX_STRIDE} for both in-plane axes (2), "
                         f"or z,y,x strides (1,2,2), got {value!r}")
    return numbers  # type: ignore[return-value]
