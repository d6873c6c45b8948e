"""A second, linear pass that gives back what the network took beyond the noise: empirical Wiener filtering.

The network's output (the *pilot*) is a good guess of the image but not an unbiased one: on sub-lattices it reads
some aliased anatomy as noise. A Wiener filter with the pilot as the signal's power spectrum and the scan's own
noise spectrum (:class:`~..estimation.scan_noise.ScanNoise`) weighs every frequency of every small window of the
*noisy* image by signal / (signal + noise): where the pilot kept structure the noisy image's own detail comes back,
where it found only noise the noise goes. This is the second stage of BM3D/BM4D (Dabov et al., 2007) without block
matching; told the scan's correlated spectrum, it removes correlated grain in proportion to its power at each
frequency, which a network trained on white noise cannot know.

Windows are ``BLOCK`` voxels along each axis that has room (sine windows, half overlapping, used for analysis and
synthesis so that they sum to one); the noise spectrum of a window is computed exactly from the noise
autocovariance and the window (no noise is drawn, so the same input always gives the same output).

Four details decide what a radiologist sees on flat tissue (figures: each step alone on top of the previous ones;
with all four, ``benchmarks/sublattice.py`` gives FBP water ×0.40–0.41 and seams within 1.5× the input's):
- **The window's mean is set aside.** A window's DFT spreads a constant over every bin along the frequency axes
  (the window's own spectrum); the pilot's mean made those bins look like structure, so they kept their noise
  and flat water or air showed row- and column-oriented blotches. The pilot's window-weighted mean is taken out
  of both images before the DFT and put back after (FBP water: noise SD ×0.51 → ×0.32).
- **A floor under the noise spectrum** (``NOISE_FLOOR`` of its mean): a flat-patch kernel is measured over a few
  lags only, and its spectrum falls to zero near Nyquist where the real noise does not; noise kept there showed
  as a period-2 stripe pattern (chest MR: seam 1.6–6 against the input's 1.2).
- **The sub-grid lattice frequencies are judged on the noisy image.** Denoising on sub-lattices keeps each
  sub-grid's local mean, so near the lattice frequencies (Nyquist for 2×2 sub-grids) the pilot still holds the
  input's noise; there the signal's power is taken as the noisy window's power less the noise's (chest MR with
  both: seam 1.2).
- **The lowest frequencies pass** (``KEPT_BELOW``): that is where a small, faint lesion lives, and a pilot that has
  smoothed it cannot vouch for it. What stays there is the input's own coarse noise (soft blobs at a narrow window).
  Ultrasound speckle is as coarse as such a lesion: 45–67 % of its power lies below ``KEPT_BELOW``, against 16 % for
  MR acquired in k-space and 7 % for CT, so passing that band kept most of it. There the band is filtered by the
  noisy window's own power (signal = |Y|² − noise, spectral subtraction: a lesion raises the power it stands on,
  noise alone does not), its gain never below ``SPECKLE_COARSE_FLOOR`` (:func:`coarse_floor`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled
from ..estimation.scan_noise import ScanNoise
from .collaborative_filter import Grouping

__all__ = ["BLOCK", "KEPT_BELOW", "NOISE_FLOOR", "SPECKLE_COARSE_FLOOR", "THICK_SLICES", "Refinement", "autocovariance",
           "block_shape", "coarse_floor", "kept_bins", "lattice_bins", "window_spectrum", "refine"]

# Window edge. On the MNI template acquired in k-space (1 coil, 6 %), after the network on 2×2 sub-lattices
# (33.5 dB), told the true noise spectrum: 8³ windows gave 32.3 dB (too few frequencies to tell structure from
# noise), 16³ 34.3 dB, 4 × 16² 33.3 dB, in-plane 32² 33.1 dB.
BLOCK = 16
THICK_SLICES = 2.0  # slice thickness over pixel size above which windows stay in-plane (see block_shape)
_MIN_SLICES_FOR_DEPTH = 16  # fewer slices: windows are in-plane only
_SLICES_PER_STEP = 16  # slices filtered at once when windows are in-plane only
# Least noise power per bin, relative to the spectrum's mean (see the module notes). At 0.1 / 0.2 / 0.3: chest MR
# seam 1.08 / 1.21 / 1.21 (input 1.19), FLASH head 1.12 / 1.06 / 1.03 (input 1.00), the demo's template
# 34.23 / 34.34 / 34.45 dB, CT 3 mm 38.50 / 38.48 / 38.44 dB; k-space MR and white noise within 0.03 dB.
NOISE_FLOOR = 0.2
# Frequencies up to this many cycles per voxel pass unfiltered (2.24 bins of a 16-voxel window). The Wiener gain
# judges a faint blob by the pilot, which has already smoothed it; a small low-contrast lesion lives at these
# frequencies. Lesions inserted into real images (1.5 × the noise SD), kept / noise left, at 0 / 0.09 / 0.14:
# B-mode BK 62 % / 79 % / 94 % (0.22 / 0.24 / 0.31), chest MR 48 / 60 / 80 % (0.49 / 0.56 / 0.71), FLASH head
# 58 / 66 / 82 % (0.56 / 0.65 / 0.76), thin CT 65 / 76 / 88 % (0.50 / 0.51 / 0.52); k-space MR PSNR within 0.05 dB.
KEPT_BELOW = 0.14
# Least gain on the KEPT_BELOW bins for ultrasound (see the module notes). With the default after it (the
# collaborative pass), gain floor 1 (the band passes) / 0.7 / 0.5: simulated speckle fine 18.6 / 19.9 / 20.8 dB,
# coarse 18.2 / 19.6 / 20.5 dB; lesions inserted into real B-mode frames (BK, Ultrasonix) 94 / 83 / 75 % and
# 93 / 84 / 78 % kept, noise left 0.30 / 0.26 / 0.24 and 0.19 / 0.16 / 0.15. No floor: 22.9 / 22.8 dB, lesions 56 / 62 %;
# the band judged by the pilot as above it: 24.3 / 23.5 dB, lesions 62 % (BK). At 0.7 on real MR (chest, 2D FLASH
# head) lesions fell from 80 to 69 % and 82 to 73 %: MR keeps the band.
SPECKLE_COARSE_FLOOR = 0.7
_NON_NEGATIVE = 1e-4  # least power per bin in the exact spectrum, relative to its mean (a kernel's can dip below 0)


@dataclass(frozen=True)
class Refinement:
    """What the refinement did: its window ``(z, y, x)``, how the noise spectrum was measured, when the
    collaborative pass followed its groups, and the least gain on the coarsest band (1: it passed)."""

    block: tuple[int, int, int]
    noise: str
    grouping: Grouping | None = None
    floor: float = 1.0

    def describe(self) -> str:
        window = "×".join(map(str, self.block[1:] if self.block[0] == 1 else self.block))
        text = f"Wiener-filtered in {window} windows with the scan's noise spectrum ({self.noise})"
        if self.floor < 1.0:
            text += f", the coarsest band too (speckle is as coarse; at least {self.floor:.0%} of it kept)"
        return text + (f", then {self.grouping.describe()}" if self.grouping is not None else "")


def block_shape(shape: tuple[int, int, int], slice_ratio: float = 1.0) -> tuple[int, int, int]:
    """Window edges ``(z, y, x)`` for a ``(D, H, W)`` volume: ``BLOCK`` along each axis long enough, else 1.

    Slices more than ``THICK_SLICES`` times thicker than the in-plane pixel (``slice_ratio``) get in-plane
    windows only: anatomy changes too much from one thick slice to the next for a window across them to hold
    the same structure (on a brain with 6.5 mm slices, windows across 8 slices cost 0.1–0.2 dB and left more
    anatomy in what was removed).
    """
    if slice_ratio > THICK_SLICES:
        depth = 1
    else:
        depth = BLOCK if shape[0] >= 2 * BLOCK else BLOCK // 2 if shape[0] >= _MIN_SLICES_FOR_DEPTH else 1
    return (depth, *(BLOCK if n >= BLOCK else 1 for n in shape[1:]))


def _window(edge: int) -> np.ndarray:
    """Sine window: its square at half overlap sums to one."""
    if edge == 1:
        return np.ones(1)
    return np.sin(np.pi * (np.arange(edge) + 0.5) / edge)


def _window_autocorrelation(edge: int) -> np.ndarray:
    """``A(τ) = Σ_n w(n) w(n + τ)`` for ``τ`` in ``[−(edge − 1), edge − 1]``."""
    w = _window(edge)
    return np.correlate(w, w, mode="full")


def _band_autocorrelation(length: int, edge: float, lags: np.ndarray) -> np.ndarray:
    """Correlation at ``lags`` of noise that is flat inside ``|f| ≤ edge`` on an axis of ``length`` voxels."""
    frequencies = np.fft.fftfreq(length)
    inside = frequencies[np.abs(frequencies) <= edge + 1e-9]
    return np.cos(2 * np.pi * np.outer(lags, inside)).mean(axis=1)


def autocovariance(noise: ScanNoise, block: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """The noise autocovariance over lags ``(−(b − 1) … b − 1)`` per axis, zero lag at the centre."""
    lags = [np.arange(-(b - 1), b) for b in block]
    if noise.band is not None:
        per_axis = [_band_autocorrelation(n, e, lag) for n, e, lag in zip(shape, noise.band, lags)]
        covariance = per_axis[0][:, None, None] * per_axis[1][None, :, None] * per_axis[2][None, None, :]
        return noise.sd ** 2 * covariance
    rho = float(np.clip(noise.correlation_z, -0.5, 0.5))
    along_z = np.where(lags[0] == 0, 1.0, np.where(np.abs(lags[0]) == 1, rho, 0.0))
    in_plane = np.zeros((2 * block[1] - 1, 2 * block[2] - 1))
    in_plane[block[1] - 1, block[2] - 1] = 1.0
    if noise.kernel is not None:
        k = noise.kernel.shape[0] // 2
        ly, lx = min(k, block[1] - 1), min(k, block[2] - 1)
        in_plane[block[1] - 1 - ly: block[1] + ly, block[2] - 1 - lx: block[2] + lx] = \
            noise.kernel[k - ly: k + ly + 1, k - lx: k + lx + 1]
    return noise.sd ** 2 * along_z[:, None, None] * in_plane[None]


def window_spectrum(noise: ScanNoise, block: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """``E|DFT(w · n)|²`` over one window: the noise power per DFT bin, exact for the given autocovariance.

    ``Σ_τ R(τ) A(τ) e^{−2πi f τ / b}``, with ``A`` the window's autocorrelation, wrapped onto the ``b``-point grid.
    """
    weighted = autocovariance(noise, block, shape)
    for axis, b in enumerate(block):
        a = _window_autocorrelation(b)
        weighted = weighted * a.reshape([-1 if i == axis else 1 for i in range(3)])
    wrapped = weighted
    for axis, b in enumerate(block):
        # Lag τ lands on bin τ mod b of the b-point DFT.
        moved = np.moveaxis(wrapped, axis, 0)
        folded = np.zeros((b, *moved.shape[1:]))
        np.add.at(folded, (np.arange(2 * b - 1) - (b - 1)) % b, moved)
        wrapped = np.moveaxis(folded, 0, axis)
    spectrum = np.real(np.fft.fftn(wrapped))
    return np.maximum(spectrum, _NON_NEGATIVE * max(float(spectrum.mean()), 1e-30)).astype(np.float32)


def coarse_floor(modality: str) -> float:
    """The least gain on the lowest bins: 1 (they pass) but for ultrasound's coarse speckle."""
    return SPECKLE_COARSE_FLOOR if modality == "us" else 1.0


def kept_bins(block: tuple[int, int, int]) -> np.ndarray:
    """The window's DFT bins at most ``KEPT_BELOW`` cycles per voxel from DC, DC itself excepted."""
    squared = sum(np.fft.fftfreq(b).reshape([-1 if i == axis else 1 for i in range(3)]) ** 2
                  for axis, b in enumerate(block))
    kept = squared <= KEPT_BELOW ** 2 + 1e-12
    kept[0, 0, 0] = False
    return kept


def lattice_bins(block: tuple[int, int, int], strides: tuple[int, int, int]) -> np.ndarray:
    """The window's DFT bins within one bin of a lattice frequency of the sub-grids, DC's neighbours excepted.

    With strides ``s`` the sub-grids' levels differ by a slowly varying field that lands at ``k · b / s`` along
    each axis (``b`` the window's edge); the sine window widens each to ±1 bin.
    """
    near_lattice, near_zero = [], []
    for edge, stride in zip(block, strides):
        bins = np.arange(edge)
        centres = [round(edge * j / stride) for j in range(stride)] if edge > 1 else [0]
        distance = np.min([np.minimum((bins - c) % edge, (c - bins) % edge) for c in centres], axis=0)
        near_lattice.append(distance <= 1)
        near_zero.append(np.minimum(bins, edge - bins) <= 1)
    lattice = near_lattice[0][:, None, None] & near_lattice[1][None, :, None] & near_lattice[2][None, None, :]
    zero = near_zero[0][:, None, None] & near_zero[1][None, :, None] & near_zero[2][None, None, :]
    return lattice & ~zero


def _reflect(indices: np.ndarray, length: int) -> np.ndarray:
    """Mirror indices into ``[0, length)`` (``…2 1 0 1 2…`` at the edges, any distance)."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    indices = np.mod(indices, period)
    return np.where(indices < length, indices, period - indices)


def refine(noisy: np.ndarray, pilot: np.ndarray, spectrum: np.ndarray, strides: tuple[int, int, int] = (1, 1, 1),
           progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
           floor: float = 1.0) -> np.ndarray:
    """The noisy ``(D, H, W)`` volume Wiener-filtered in windows with the pilot as its signal.

    A few slices are filtered at a time, so memory beyond the result stays small.

    Args:
        noisy: what was denoised.
        pilot: the network's output, same shape.
        spectrum: :func:`window_spectrum` for the windows (its shape is the window's); no bin counts as
            less than ``NOISE_FLOOR`` of its mean.
        strides: the sub-grids the pilot was denoised on ``(z, y, x)``; ``(1, 1, 1)`` for the whole image.
        progress: called with the fraction done.
        cancel: polled between slabs; returning True raises :class:`Cancelled`.
        floor: the least gain on the ``KEPT_BELOW`` bins (:func:`coarse_floor`); 1: they pass unfiltered.

    Raises:
        Cancelled: when ``cancel()`` returned True.
    """
    block = spectrum.shape
    depth, height, width = noisy.shape
    weights = [torch.from_numpy(_window(b).astype(np.float32)) for b in block]
    window = weights[0][:, None, None] * weights[1][None, :, None] * weights[2][None, None, :]
    noise_power = torch.from_numpy(np.maximum(spectrum, np.float32(NOISE_FLOOR * spectrum.mean())))
    lattice = lattice_bins(block, strides)
    lattice = torch.from_numpy(lattice) if lattice.any() else None  # whole image: no lattice frequencies
    kept = torch.from_numpy(kept_bins(block))
    # Padded grids: windows start every b (and b/2 later, for the other half of the overlap), from b before.
    before = [b if b > 1 else 0 for b in block]
    lengths = [n + 2 * pad + (-(n + 2 * pad) % b) for n, pad, b in zip(noisy.shape, before, block)]
    rows_y = _reflect(np.arange(lengths[1]) - before[1], height)
    rows_x = _reflect(np.arange(lengths[2]) - before[2], width)
    in_plane = [sorted({0, b // 2}) for b in block[1:]]
    out = np.zeros(noisy.shape, np.float32)
    slab = block[0] if block[0] > 1 else _SLICES_PER_STEP
    steps = [(start, min(start + slab, lengths[0] - (lengths[0] - shift) % block[0]))
             for shift in sorted({0, block[0] // 2}) for start in range(shift, lengths[0] - block[0] + 1, slab)]
    for done, (start, stop) in enumerate(steps):
        if cancel is not None and cancel():
            raise Cancelled("denoising was cancelled")
        planes = np.arange(start, stop) - before[0]
        rows_z = _reflect(planes, depth)
        y = torch.from_numpy(np.ascontiguousarray(noisy[rows_z][:, rows_y][:, :, rows_x], dtype=np.float32))
        p = torch.from_numpy(np.ascontiguousarray(pilot[rows_z][:, rows_y][:, :, rows_x], dtype=np.float32))
        filtered = torch.zeros_like(y)
        for shift_y, shift_x in itertools.product(*in_plane):
            region = (slice(None), slice(shift_y, shift_y + (lengths[1] - shift_y) // block[1] * block[1]),
                      slice(shift_x, shift_x + (lengths[2] - shift_x) // block[2] * block[2]))
            filtered[region] += _filtered(y[region], p[region], window, noise_power, lattice, kept, floor)
        inside = (planes >= 0) & (planes < depth)
        out[planes[inside]] += filtered.numpy()[inside][:, before[1]: before[1] + height, before[2]: before[2] + width]
        if progress is not None:
            progress((done + 1) / len(steps))
    return out


def _filtered(noisy: torch.Tensor, pilot: torch.Tensor, window: torch.Tensor, noise_power: torch.Tensor,
              lattice: torch.Tensor | None, kept: torch.Tensor, floor: float = 1.0) -> torch.Tensor:
    """One tiling of windows: each window of ``noisy``, less the pilot's mean, weighted per DFT bin by
    signal power / (signal + noise power) (on the ``kept`` bins: 1, or for ``floor`` < 1 the noisy window's own
    gain, at least ``floor``), windowed again for the overlap-add, with the mean put back."""
    block = tuple(window.shape)
    dims = (-3, -2, -1)
    noisy_blocks, pilot_blocks = _blocks(noisy, block), _blocks(pilot, block)
    weight = window.sum()
    noisy_mean = (noisy_blocks * window).sum(dim=dims, keepdim=True) / weight
    pilot_mean = (pilot_blocks * window).sum(dim=dims, keepdim=True) / weight
    noisy_spectrum = torch.fft.fftn((noisy_blocks - noisy_mean) * window, dim=dims)
    signal_power = torch.fft.fftn((pilot_blocks - pilot_mean) * window, dim=dims).abs().square_()
    if lattice is not None or floor < 1.0:
        from_noisy = (noisy_spectrum.abs().square() - noise_power).clamp_(min=0)
    if lattice is not None:
        signal_power = torch.where(lattice, from_noisy, signal_power)
    gain = signal_power / (signal_power + noise_power)
    if floor < 1.0:
        own = (from_noisy / (from_noisy + noise_power)).mul_(1.0 - floor).add_(floor)
        gain = torch.where(kept, own, gain)
    else:
        gain = gain.masked_fill_(kept, 1.0)
    result = torch.fft.ifftn(noisy_spectrum * gain, dim=dims).real * window + pilot_mean * window.square()
    return _unblocks(result, noisy.shape, block)


def _blocks(array: torch.Tensor, block: tuple[int, int, int]) -> torch.Tensor:
    """``(D, H, W)`` → ``(D/bz, H/by, W/bx, bz, by, bx)``."""
    d, h, w = array.shape
    bz, by, bx = block
    return array.reshape(d // bz, bz, h // by, by, w // bx, bx).permute(0, 2, 4, 1, 3, 5)


def _unblocks(blocks: torch.Tensor, shape, block: tuple[int, int, int]) -> torch.Tensor:
    d, h, w = shape
    bz, by, bx = block
    return blocks.permute(0, 3, 1, 4, 2, 5).reshape(d, h, w)
