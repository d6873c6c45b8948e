"""Seam score: how strongly an image shows a periodic grid, the artefact of denoising on sub-lattices.

Pixel-shuffle down-sampling (blind-spot and Neighbor2Neighbor-style denoisers) splits an image into s × s
sub-images, denoises each and interleaves them again; whatever differs between the sub-images comes back as a
pattern of period s, i.e. as power at the lattice frequencies ``(0, n/s)``, ``(n/s, 0)`` and ``(n/s, n/s)`` of
the image's spectrum. The pattern hardly changes the SD, so PSNR and noise SD miss it; the eye does not.

:func:`seam_ratios` divides the mean power in a small disc around each lattice frequency by the mean power in
a ring around it (the local level of the spectrum, whatever the image's own texture); :func:`seam_score` is the
largest ratio: about 1 without a grid, clearly above 1 with one. :func:`in_plane_images` picks the slices of a
volume to measure on. The power is averaged over all images before dividing, so a stack of slices gives a
steadier score than one slice. Each crop is tapered by a Hann window first: without it, the jump between a
crop's opposite edges leaks power along the frequency axes, through two of the three lattice frequencies, and
CT and MR slices with no grid at all (raw or Gaussian-smoothed) scored up to 4.8.
"""
from __future__ import annotations

import numpy as np

from .crops import centre_crop
from .noise_power import power_spectrum

__all__ = ["in_plane_images", "seam_ratios", "seam_score"]

# The centre 128 x 128 is enough for bins of 1/128 cycle per pixel and keeps slices of any size comparable.
_CROP = 128
# The smaller the crop, the closer the lattice frequencies (at 32 pixels: 8, 11 and 16 bins, so discs and rings
# of neighbouring periods overlap and period 4's rings reach DC); below 32 the ratios would mean little.
_MIN_SIZE = 32
_PERIODS = (2, 3, 4)
_DISC_RADIUS = 3.0
_RING = (6.0, 12.0)


def in_plane_images(volume: np.ndarray, max_images: int = 32) -> np.ndarray:
    """Up to ``max_images`` evenly spaced axial slices of a volume, as ``(N, H, W)``.

    Args:
        volume: ``(D, H, W)`` volume, or one ``(H, W)`` image (returned as ``(1, H, W)``).
        max_images: most slices returned (>= 1).

    Returns:
        The slices (a copy for a volume), each the middle slice of one of ``N`` equal runs of slices, so the
        first and last slices, often padding, are skipped when there are more slices than ``max_images``.

    Raises:
        ValueError: for a shape other than 2D/3D, an empty array or ``max_images < 1``.
    """
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3) or volume.size == 0:
        raise ValueError(f"volume must be a non-empty 2D or 3D array, got shape {volume.shape}")
    if int(max_images) != max_images or max_images < 1:
        raise ValueError(f"max_images must be an integer >= 1, got {max_images}")
    if volume.ndim == 2:
        return volume[None]
    depth = volume.shape[0]
    count = min(depth, int(max_images))
    # Runs of depth/count >= 1 slices, so the middles are distinct.
    indices = ((np.arange(count) + 0.5) * depth / count).astype(int)
    return volume[indices]


def _mean_power(images: np.ndarray) -> np.ndarray:
    """``⟨|FFT2|²⟩`` over the images' mean-free central crops, fftshifted (DC at index ``n // 2``)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[0] < 1:
        raise ValueError(f"images must be (H, W) or (N, H, W) with N >= 1, got shape {images.shape}")
    if min(images.shape[1:]) < _MIN_SIZE:
        raise ValueError(f"seam score needs images of at least {_MIN_SIZE} x {_MIN_SIZE} pixels, "
                         f"got {images.shape[1]} x {images.shape[2]}")
    crops = centre_crop(images, (None, _CROP, _CROP))
    # Without the mean, DC holds no power and does not leak into rings that come near it.
    crops = crops - crops.mean(axis=(1, 2), keepdims=True)
    # The FFT takes a crop as periodic: the jump between opposite edges (anatomy cut by the crop) puts a cross
    # of power along kx = 0 and ky = 0, right through (0, n/s) and (n/s, 0), and real scans with no grid
    # scored up to 4.8. A Hann taper removes the jump; it widens a peak to +-2 bins, still inside the disc.
    taper = np.hanning(crops.shape[1])[:, None] * np.hanning(crops.shape[2])[None, :]
    return np.fft.fftshift(power_spectrum(crops * taper))


def _periodic_distance(n: int, centre: int) -> np.ndarray:
    """Distance in bins from index ``centre`` along an axis of ``n`` frequencies that wraps around."""
    distance = np.abs(np.arange(n) - centre) % n
    return np.minimum(distance, n - distance)


def seam_ratios(images: np.ndarray) -> dict[tuple[int, tuple[int, int]], float]:
    """The disc-to-ring power ratio at every lattice frequency of periods 2, 3 and 4.

    For each period s and frequency ``(ky, kx)`` in ``(0, n_x/s)``, ``(n_y/s, 0)``, ``(n_y/s, n_x/s)``
    (rounded to whole bins; n: the crop's size along that axis), the mean power within 3 bins of it is divided
    by the mean power 6 to 12 bins from it. Distances wrap around, so the disc at Nyquist (period 2) is whole.
    Each crop is mean-free and Hann-tapered before its FFT (see the module notes).

    Args:
        images: ``(H, W)`` or ``(N, H, W)``, at least 32 x 32; the centre 128 x 128 (or the whole axis where
            shorter) of each is used and the power spectra are averaged over the images.

    Returns:
        ``{(s, (ky, kx)): ratio}``; about 1 where the spectrum has no peak, NaN for constant images.

    Raises:
        ValueError: for another shape or images smaller than 32 pixels along an axis.
    """
    power = _mean_power(images)
    size_y, size_x = power.shape
    ratios: dict[tuple[int, tuple[int, int]], float] = {}
    for period in _PERIODS:
        fy, fx = round(size_y / period), round(size_x / period)
        for ky, kx in ((0, fx), (fy, 0), (fy, fx)):
            # fftshift put frequency k at index k + n // 2.
            dy = _periodic_distance(size_y, ky + size_y // 2)
            dx = _periodic_distance(size_x, kx + size_x // 2)
            radius = np.hypot(dy[:, None], dx[None, :])
            disc = float(power[radius <= _DISC_RADIUS].mean())
            ring = float(power[(radius >= _RING[0]) & (radius <= _RING[1])].mean())
            ratios[(period, (ky, kx))] = disc / ring if ring > 0 else float("nan")
    return ratios


def seam_score(images: np.ndarray) -> float:
    """The worst (largest) ratio of :func:`seam_ratios`: ~1 for no grid, > 1 the stronger a grid shows.

    Args:
        images: ``(H, W)`` or ``(N, H, W)``, at least 32 x 32 (see :func:`seam_ratios`); for a volume pass
            :func:`in_plane_images` of it.

    Returns:
        The score; NaN for constant images.

    Raises:
        ValueError: for another shape or images smaller than 32 pixels along an axis.
    """
    # np.max, not max(): a NaN (no power at all) must propagate rather than depend on the dict's order.
    return float(np.max(np.array(list(seam_ratios(images).values()))))
