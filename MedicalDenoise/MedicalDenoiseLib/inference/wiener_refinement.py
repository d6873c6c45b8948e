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
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled
from ..estimation.scan_noise import ScanNoise

__all__ = ["BLOCK", "THICK_SLICES", "Refinement", "block_shape", "window_spectrum", "refine"]

# Window edge. On the MNI template acquired in k-space (1 coil, 6 %), after the network on 2×2 sub-lattices
# (33.5 dB), told the true noise spectrum: 8³ windows gave 32.3 dB (too few frequencies to tell structure from
# noise), 16³ 34.3 dB, 4 × 16² 33.3 dB, in-plane 32² 33.1 dB.
BLOCK = 16
THICK_SLICES = 2.0  # slice thickness over pixel size above which windows stay in-plane (see block_shape)
_MIN_SLICES_FOR_DEPTH = 16  # fewer slices: windows are in-plane only
_SLICES_PER_STEP = 16  # slices filtered at once when windows are in-plane only
_FLOOR = 1e-4  # least noise power per bin, relative to the mean (a kernel's spectrum can dip below zero)


@dataclass(frozen=True)
class Refinement:
    """What the refinement did: its window ``(z, y, x)`` and how the noise spectrum was measured."""

    block: tuple[int, int, int]
    noise: str

    def describe(self) -> str:
        window = "×".join(map(str, self.block[1:] if self.block[0] == 1 else self.block))
        return f"Wiener-filtered in {window} windows with the scan's noise spectrum ({self.noise})"


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


def _autocovariance(noise: ScanNoise, block: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    """The noise autocovariance over lags ``(−(b − 1) … b − 1)`` per axis."""
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
    weighted = _autocovariance(noise, block, shape)
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
    return np.maximum(spectrum, _FLOOR * max(float(spectrum.mean()), 1e-30)).astype(np.float32)


def _reflect(indices: np.ndarray, length: int) -> np.ndarray:
    """Mirror indices into ``[0, length)`` (``…2 1 0 1 2…`` at the edges, any distance)."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    indices = np.mod(indices, period)
    return np.where(indices < length, indices, period - indices)


def refine(noisy: np.ndarray, pilot: np.ndarray, spectrum: np.ndarray,
           progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """The noisy ``(D, H, W)`` volume Wiener-filtered in windows with the pilot as its signal.

    A few slices are filtered at a time, so memory beyond the result stays small.

    Args:
        noisy: what was denoised.
        pilot: the network's output, same shape.
        spectrum: :func:`window_spectrum` for the windows (its shape is the window's).
        progress: called with the fraction done.
        cancel: polled between slabs; returning True raises :class:`Cancelled`.

    Raises:
        Cancelled: when ``cancel()`` returned True.
    """
    block = spectrum.shape
    depth, height, width = noisy.shape
    weights = [torch.from_numpy(_window(b).astype(np.float32)) for b in block]
    window = weights[0][:, None, None] * weights[1][None, :, None] * weights[2][None, None, :]
    noise_power = torch.from_numpy(spectrum)
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
            filtered[region] += _filtered(y[region], p[region], window, noise_power)
        inside = (planes >= 0) & (planes < depth)
        out[planes[inside]] += filtered.numpy()[inside][:, before[1]: before[1] + height, before[2]: before[2] + width]
        if progress is not None:
            progress((done + 1) / len(steps))
    return out


def _filtered(noisy: torch.Tensor, pilot: torch.Tensor, window: torch.Tensor, noise_power: torch.Tensor) -> torch.Tensor:
    """One tiling of windows: each window of ``noisy`` weighted per DFT bin by pilot power / (pilot + noise power),
    windowed again for the overlap-add."""
    block = tuple(window.shape)
    dims = (-3, -2, -1)
    pilot_power = torch.fft.fftn(_blocks(pilot, block) * window, dim=dims).abs().square_()
    gain = pilot_power / (pilot_power + noise_power)
    result = torch.fft.ifftn(torch.fft.fftn(_blocks(noisy, block) * window, dim=dims) * gain, dim=dims).real * window
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
