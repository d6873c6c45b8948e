"""Denoising a volume with a trained model: the one entry point the CLI, Slicer and benchmarks share.

file or node → array + geometry → normalise → tiled network → denormalise → array + the same geometry.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from ..io.volume import Volume
from ..models.model_files import LoadedModel
from ..models.networks.axis_order import depth_last
from ..models.registry import open_model
from ..estimation.noise_estimation import estimate_noise
from ..estimation.robust import fill_non_finite
from ..estimation.scan_noise import measure_scan_noise
from .devices import resolve_device
from .grain import Grain, learned_grain, measure_grain, parse_grain
from .normalization import MODALITIES, IntensityNormalizer, guess_modality
from .outside_field import find_outside_field
from .strength import network_settings, parse_strength
from .sublattice import agree, merge, split
from .tiling import sliding_window_inference
from . import collaborative_filter, wiener_refinement
from .wiener_refinement import Refinement

__all__ = ["DenoiseResult", "Denoiser"]

log = logging.getLogger(__name__)

_MIN_TILE = 32
_THIN_DEPTH = 16  # volumes with at most this many slices run with the slice axis last
NETWORK_SHARE = 0.7  # of the progress bar, when the refinement follows the network
WIENER_SHARE = 0.3  # of the refinement's part: the rest is the collaborative pass


@dataclass
class DenoiseResult:
    """The denoised volume (float32, the input's units and geometry) and what was done.

    Attributes:
        volume: the result; cast to the input's pixel type when written.
        estimated_sigma: the noise SD measured in the input, in its units.
        used_sigma: the noise SD the strength stands for, in the input's units (the estimate for auto).
        modality: the normalisation used.
        device: where the network ran (after any fallback).
        seconds: wall time.
        messages: things the user should know (non-finite voxels, fallbacks, constant input).
        network: the name of the network that ran: the model's, its planar twin's for a 2D image, or its
            sub-lattice twin's on sub-lattices.
        grain: the noise grain measured and the sub-lattice strides the network ran on.
        refinement: how the network's output was Wiener-refined (None: it was not).
    """

    volume: Volume
    estimated_sigma: float
    used_sigma: float
    modality: str
    device: str
    seconds: float
    messages: list[str] = field(default_factory=list)
    network: str = ""
    grain: Grain = field(default_factory=lambda: Grain((1, 1, 1)))
    refinement: Refinement | None = None

    def describe(self) -> str:
        """One line for the user: the grain measured, the sub-grids used and the refinement."""
        steps = self.grain.describe()
        return steps + (f"; then {self.refinement.describe()}" if self.refinement is not None else "")


class Denoiser:
    """A loaded model on a device, ready to denoise volumes.

    Args:
        model: a loaded model, a registry name or a model file path (None: the default model).
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        tile_size: largest tile edge in voxels (None: 160 on the CPU, 192 on a GPU).
        overlap: least overlap between tiles in voxels.
        flips: average over the 8 axis flips (sharper, 8× slower).
        refine: Wiener-filter the input with the network's output as the signal and the scan's own noise spectrum
            (:mod:`.wiener_refinement`): gives back detail the network took beyond the noise; then filter it
            again in groups of similar cubes (:mod:`.collaborative_filter`).
        group: with ``refine``, the collaborative pass after the Wiener one (False: the Wiener pass alone, for
            comparison).
    """

    def __init__(
        self,
        model: LoadedModel | str | None = None,
        device: str = "auto",
        tile_size: int | None = None,
        overlap: int = 16,
        flips: bool = False,
        refine: bool = True,
        group: bool = True,
    ) -> None:
        self.model = model if isinstance(model, LoadedModel) else open_model(model)
        self.device = resolve_device(device)
        self.tile_size = tile_size or _default_tile(self.device)
        if self.tile_size < _MIN_TILE:
            raise ValueError(f"tile size must be >= {_MIN_TILE} voxels, got {self.tile_size}")
        self.overlap = overlap
        self.flips = flips
        self.network = _prepared(self.model.network, self.device)
        self._variants: dict[str, torch.nn.Module] = {}
        self.refine = refine
        self.group = group

    @property
    def name(self) -> str:
        return self.model.card.name

    def denoise(
        self,
        volume: Volume,
        strength: str | float = "auto",
        modality: str = "auto",
        progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        grain: str | tuple[int, int, int] = "auto",
    ) -> DenoiseResult:
        """Denoises ``volume``; the input is never modified.

        Args:
            volume: a 2D or 3D scalar image.
            strength: "auto" (the estimated noise), "mild", "standard", "strong", or a noise SD in the
                image's units.
            modality: "auto" (from the file's tag or the intensities), "ct", "mr" or "us".
            progress: called with the fraction done.
            cancel: polled between tiles; returning True raises :class:`Cancelled`.
            grain: "auto" (measure the noise grain and denoise on the sub-lattices where it is white; a model
                trained on scanner grain runs whole), or the ``(z, y, x)`` sub-lattice strides (``(1, 1, 1)``:
                the whole image, as for white noise).

        Raises:
            InputError: for an image that is not 2D or 3D scalar.
            ValueError: for a bad strength or modality.
            Cancelled: when cancelled.
        """
        started = time.perf_counter()
        strength = parse_strength(strength)
        strides = parse_grain(grain)
        if modality != "auto" and modality not in MODALITIES:
            raise ValueError(f"modality must be one of auto, {', '.join(MODALITIES)}, got {modality!r}")
        array = volume.array
        if array.ndim not in (2, 3) or array.size == 0:
            raise InputError(f"{volume.source}: expected a non-empty 2D or 3D scalar image, got shape {array.shape}")
        messages: list[str] = []
        work = np.asarray(array, dtype=np.float32)
        finite = np.isfinite(work)
        if work.size and not finite.any():
            raise InputError(f"{volume.source}: every voxel is NaN or infinite; nothing to denoise")
        non_finite = None if finite.all() else ~finite
        del finite
        work, n_bad, fill = fill_non_finite(work)
        if n_bad:
            messages.append(
                f"{n_bad} NaN/infinite voxels were replaced by the median ({fill:g}) before denoising; "
                "the output holds denoised finite values there"
            )
        chosen = guess_modality(array, volume.modality if modality == "auto" else modality)
        if float(work.max()) == float(work.min()):
            messages.append("the image is constant: returned unchanged")
            return DenoiseResult(volume.with_array(work.copy()), 0.0, 0.0, chosen, "none",
                                 time.perf_counter() - started, messages, "none")
        outside = find_outside_field(work, chosen, excluded=non_finite)
        if outside is not None:
            work = outside.hidden(work)
        normalizer = IntensityNormalizer.fit(work, chosen)
        normalized = normalizer.normalize(work)
        del work
        estimate = estimate_noise(normalized)
        volume3d = normalized if normalized.ndim == 3 else normalized[None]
        found = self._grain(strides, estimate, normalized)
        batch = volume3d[None] if found.whole else split(volume3d, found.strides)
        layout = self._layout(batch.shape[1:])
        runner = self._runner(layout, found.whole)
        card = runner.card
        # On sub-lattices the grain is white: its finest scale holds the whole noise, whatever the model's scale.
        fine = estimate.fine_scale_sigma if found.whole else estimate.sigma
        settings = network_settings(strength, estimate.sigma, fine, normalizer.scale,
                                    card.network.noise_level_input, card.conditioning)
        low, high = card.noise_range
        if settings.level is not None and high and settings.level > 1.5 * high:
            messages.append(
                f"noise level {settings.used_sd * normalizer.scale:.3g} is above what the model was trained for; "
                "the result may be smoother than expected"
            )
        stages = _Stages(progress, NETWORK_SHARE if self.refine else 1.0)
        output, device_used = self._run_tiled(batch, settings.level, layout, runner, stages.first, cancel, messages)
        del batch
        output = output[0] if found.whole else agree(merge(output, found.strides, volume3d.shape), volume3d, found.strides)
        refinement = None
        if self.refine:
            output, refinement = self._refined(volume3d, output, estimate, settings.used_sd, chosen, found.strides,
                                               _slice_ratio(volume), stages.second, cancel)
        output = output.reshape(array.shape)
        if settings.blend != 1.0 and refinement is None:
            # A blind network's strength: remove that fraction of what it would remove.
            output -= normalized
            output *= np.float32(settings.blend)
            output += normalized
        output = normalizer.denormalize_(output)
        if outside is not None:
            outside.restore_(output)
        return DenoiseResult(
            volume=volume.with_array(output),
            estimated_sigma=estimate.sigma * normalizer.scale,
            used_sigma=settings.used_sd * normalizer.scale,
            modality=chosen,
            device=device_used,
            seconds=time.perf_counter() - started,
            messages=messages,
            network=card.name,
            grain=found,
            refinement=refinement,
        )

    def _refined(self, volume3d, pilot, estimate, used_sd, modality, strides, slice_ratio, progress, cancel):
        """``pilot`` Wiener-refined with the scan's noise spectrum at the strength's level, then filtered in
        groups of similar cubes (:mod:`.collaborative_filter`), and what was done (None, with the pilot
        unchanged, when there is nothing to refine with)."""
        noise = measure_scan_noise(volume3d, estimate, modality)
        block = wiener_refinement.block_shape(volume3d.shape, slice_ratio)
        if noise.sd <= 0 or used_sd <= 0 or estimate.sigma <= 0 or 1 in block[1:]:
            return pilot, None
        level = np.float32((used_sd / estimate.sigma) ** 2)  # the strength scales the noise's power
        stages = _Stages(progress, WIENER_SHARE if self.group else 1.0)
        spectrum = wiener_refinement.window_spectrum(noise, block, volume3d.shape) * level
        floor = wiener_refinement.coarse_floor(modality)
        refined = wiener_refinement.refine(volume3d, pilot, spectrum, strides, stages.first, cancel, floor)
        if not self.group:
            return refined, Refinement(block, noise.measured_by, floor=floor)
        cube = collaborative_filter.cube_shape(block)
        covariance = wiener_refinement.autocovariance(noise, cube, volume3d.shape) * level
        variance = collaborative_filter.coefficient_variance(covariance, cube)
        output = collaborative_filter.collaborate(volume3d, refined, variance, cube, stages.second, cancel)
        grouping = collaborative_filter.Grouping(cube, collaborative_filter.GROUP)
        return output, Refinement(block, noise.measured_by, grouping, floor)

    def _grain(self, strides, estimate, normalized: np.ndarray) -> Grain:
        """The user's strides; under auto, whole for a model that learned grain, else as measured."""
        if strides is not None:
            return Grain(strides, chosen_by="user")
        if learned_grain(self.model.card.noise_kinds):
            return Grain((1, 1, 1), chosen_by="model")
        return measure_grain(estimate, normalized)

    def _planar_model(self) -> LoadedModel | None:
        """The model itself when it is planar, else its planar twin (None without one)."""
        return self.model if self.model.card.network.spatial_dims == 2 else self.model.planar

    def _runner(self, layout: str, whole: bool) -> LoadedModel:
        """The model whose network runs: the planar one for the planar layout; on sub-lattices the model's
        sub-lattice twin when it has one (trained on exactly that input); else the model itself."""
        if layout == "planar":
            return self._planar_model()
        if not whole and self.model.sublattice is not None:
            return self.model.sublattice
        return self.model

    def _layout(self, shape: tuple[int, int, int]) -> str:
        """How a ``(D, H, W)`` input runs: "planar" (slice by slice, through a planar model or, for one
        slice, the model's planar twin), "depth-last" (a thin volume with its first axis moved last) or
        "volume"."""
        if self.model.card.network.spatial_dims == 2 or (shape[0] == 1 and self.model.planar is not None):
            return "planar"
        return "depth-last" if shape[0] <= _THIN_DEPTH else "volume"

    def _network(self, layout: str, runner: LoadedModel) -> torch.nn.Module:
        """``runner``'s network for ``layout``, prepared on this Denoiser's device once."""
        if layout == "volume" and runner is self.model:
            return self.network
        key = f"{layout} {runner.card.name}"
        if key not in self._variants:
            source = depth_last(runner.network) if layout == "depth-last" else runner.network
            self._variants[key] = _prepared(source, self.device)
        return self._variants[key]

    def _move_to(self, device: torch.device) -> None:
        """Puts the network on ``device`` and makes it this Denoiser's device for every later call."""
        self.device = device
        self.tile_size = _default_tile(device)
        self.network = _prepared(self.network, device)
        self._variants = {}

    def _predictor(self, level: float, layout: str, runner: LoadedModel):
        network = self._network(layout, runner)
        device = self.device
        use_amp = device.type == "cuda"
        channels_last = device.type == "cpu" and layout != "planar"

        def predict_once(tile: torch.Tensor) -> torch.Tensor:
            if channels_last:
                tile = tile.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                return network(tile, level).float()

        if not self.flips:
            return predict_once

        def predict_flipped(tile: torch.Tensor) -> torch.Tensor:
            total = torch.zeros_like(tile)
            for flip in ([], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]):
                flipped = tile.flip(flip) if flip else tile
                out = predict_once(flipped)
                total += out.flip(flip) if flip else out
            return total / 8

        return predict_flipped

    def _run_tiled(self, volumes, level, layout, runner, progress, cancel, messages) -> tuple[np.ndarray, str]:
        """Runs the tiles of ``volumes`` ``(B, D, H, W)`` (the sub-lattices of one image, or the image alone), the
        ``B`` tiles at one place as one batch, halving tiles on GPU out-of-memory; in the end this Denoiser moves
        to the CPU.

        A 2D image (one slice) runs through the model's planar twin when it has one, so it costs about what
        a volume of its voxel count does. Any other thin volume runs with its first axis moved last: same
        result, several times faster on the CPU (see :mod:`..models.networks.axis_order`). Both run in tiles
        as large in-plane as a cube tile holds voxels.
        """
        planar = layout == "planar"
        thin = layout == "depth-last"
        multiple = runner.card.network.size_multiples
        work = np.ascontiguousarray(volumes.transpose(0, 2, 3, 1)) if thin else volumes
        report = _ProgressAcrossRetries(progress)
        tile = _batch_tile(self.tile_size, len(volumes))
        while True:
            try:
                overlap = min(self.overlap, tile // 4)
                output = sliding_window_inference(
                    work, self._predictor(level, layout, runner), tile_size=_tile_shape(work.shape[1:], tile, layout, multiple),
                    overlap=_overlaps(overlap, layout), size_multiple=multiple,
                    device=self.device, progress=report, cancel=cancel,
                )
                break
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                report.restart()
                if self.device.type != "cpu" and tile // 2 >= _MIN_TILE:
                    tile //= 2
                    messages.append(f"GPU out of memory: retrying with {tile}³ tiles")
                    log.warning(messages[-1])
                    continue
                if self.device.type == "cpu":
                    raise
                messages.append("GPU out of memory even with small tiles: finishing on the CPU (slower)")
                log.warning(messages[-1])
                self._move_to(torch.device("cpu"))
                tile = _batch_tile(self.tile_size, len(volumes))
        if thin:
            output = np.ascontiguousarray(output.transpose(0, 3, 1, 2))
        return output, str(self.device)


def _slice_ratio(volume: Volume) -> float:
    """Slice thickness over the in-plane pixel size (1 for a 2D image)."""
    spacing = volume.geometry.spacing
    if len(spacing) < 3 or min(spacing[:2]) <= 0:
        return 1.0
    return float(spacing[2]) / max(spacing[:2])


def _default_tile(device: torch.device) -> int:
    return 160 if device.type == "cpu" else 192


def _batch_tile(tile: int, batch: int) -> int:
    """The tile edge for ``batch`` tiles run at once: as many voxels in all as one tile of ``tile``, so memory
    stays what it is for the whole image."""
    return max(_MIN_TILE, int(tile / batch ** (1 / 3)))


def _prepared(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    network = network.to(device).eval()
    if device.type == "cpu" and network.config.spatial_dims == 3:
        # oneDNN's 3D convolutions run about twice as fast in channels-last layout.
        network = network.to(memory_format=torch.channels_last_3d)
    return network


def _tile_shape(shape: tuple[int, int, int], tile: int, layout: str, multiples: tuple[int, int, int]) -> tuple[int, int, int]:
    """Per-axis tile sizes: a cube; for a thin volume (thin axis last) as many voxels in a flat tile; for a
    planar network one slice of as many voxels."""
    if layout == "volume":
        return (tile, tile, tile)
    if layout == "planar":
        edge = int(math.sqrt(tile**3))
        return (1, edge, edge)
    depth = max(-(-shape[2] // multiples[2]) * multiples[2], multiples[2])
    edge = max(tile, int(math.sqrt(tile**3 / depth)))
    return (edge, edge, depth)


def _overlaps(overlap: int, layout: str) -> tuple[int, int, int]:
    """Tiles overlap on the axes they split: not across slices for a planar network (each slice stands
    alone), not along a thin volume's moved axis (one tile deep)."""
    if layout == "planar":
        return (0, overlap, overlap)
    return (overlap, overlap, 0) if layout == "depth-last" else (overlap, overlap, overlap)


class _Stages:
    """Splits one progress bar between two stages: the first ``share`` and the rest (the network and the
    refinement; within the refinement, the Wiener pass and the collaborative one)."""

    def __init__(self, callback: Callable[[float], None] | None, share: float) -> None:
        self._callback = callback
        self._share = share

    def first(self, fraction: float) -> None:
        if self._callback is not None:
            self._callback(self._share * fraction)

    def second(self, fraction: float) -> None:
        if self._callback is not None:
            self._callback(self._share + (1.0 - self._share) * fraction)


class _ProgressAcrossRetries:
    """Reports progress that never goes back: a retry (smaller tiles, the CPU) continues from where the
    previous attempt had got to and fills the rest of the bar."""

    def __init__(self, callback: Callable[[float], None] | None) -> None:
        self._callback = callback
        self._start = 0.0
        self._last = 0.0

    def restart(self) -> None:
        self._start = self._last

    def __call__(self, fraction: float) -> None:
        self._last = self._start + (1.0 - self._start) * fraction
        if self._callback is not None:
            self._callback(self._last)
