"""Denoising a volume with a trained model: the one entry point the CLI, Slicer and benchmarks share.

file or node → array + geometry → normalise → tiled network → denormalise → array + the same geometry.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .devices import resolve_device
from ..errors import InputError
from ..models.model_files import LoadedModel
from .noise_estimation import estimate_noise_sigma
from .robust import fill_non_finite
from .normalization import MODALITIES, IntensityNormalizer, guess_modality
from ..models.registry import open_model
from .tiling import sliding_window_inference
from ..io.volume import Volume

__all__ = ["STRENGTHS", "DenoiseResult", "Denoiser", "parse_strength"]

log = logging.getLogger(__name__)

# Named strengths scale the estimated noise level the network is told about.
STRENGTHS = {"mild": 0.6, "standard": 1.0, "strong": 1.6}
_MIN_TILE = 32


def parse_strength(value: str | float) -> str | float:
    """``auto``, a named strength, or a noise SD in the image's units (a number >= 0).

    Raises:
        ValueError: naming the valid choices.
    """
    if isinstance(value, (int, float)):
        number = float(value)
    elif str(value).lower() in ("auto", *STRENGTHS):
        return str(value).lower()
    else:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"strength must be auto, {', '.join(STRENGTHS)} or a noise SD >= 0, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"strength must be auto, {', '.join(STRENGTHS)} or a noise SD >= 0, got {value!r}")
    return number


@dataclass
class DenoiseResult:
    """The denoised volume (float32, the input's units and geometry) and what was done.

    Attributes:
        volume: the result; cast to the input's pixel type when written.
        estimated_sigma: the noise SD measured in the input, in its units.
        used_sigma: the noise level the network was told, in the input's units.
        modality: the normalisation used.
        device: where the network ran (after any fallback).
        seconds: wall time.
        messages: things the user should know (non-finite voxels, fallbacks, constant input).
    """

    volume: Volume
    estimated_sigma: float
    used_sigma: float
    modality: str
    device: str
    seconds: float
    messages: list[str] = field(default_factory=list)


class Denoiser:
    """A loaded model on a device, ready to denoise volumes.

    Args:
        model: a loaded model, a registry name or a model file path (None: the default model).
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        tile_size: largest tile edge in voxels (None: 160 on the CPU, 192 on a GPU).
        overlap: least overlap between tiles in voxels.
        flips: average over the 8 axis flips (sharper, 8× slower).
    """

    def __init__(
        self,
        model: LoadedModel | str | None = None,
        device: str = "auto",
        tile_size: int | None = None,
        overlap: int = 16,
        flips: bool = False,
    ) -> None:
        self.model = model if isinstance(model, LoadedModel) else open_model(model)
        self.device = resolve_device(device)
        self.tile_size = tile_size or (160 if self.device.type == "cpu" else 192)
        if self.tile_size < _MIN_TILE:
            raise ValueError(f"tile size must be >= {_MIN_TILE} voxels, got {self.tile_size}")
        self.overlap = overlap
        self.flips = flips
        self.network = self.model.network.to(self.device).eval()
        if self.device.type == "cpu":
            # oneDNN's 3D convolutions run about twice as fast in channels-last layout.
            self.network = self.network.to(memory_format=torch.channels_last_3d)

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
    ) -> DenoiseResult:
        """Denoises ``volume``; the input is never modified.

        Args:
            volume: a 2D or 3D scalar image.
            strength: "auto" (the estimated noise), "mild", "standard", "strong", or a noise SD in the
                image's units.
            modality: "auto" (from the file's tag or the intensities), "ct", "mr" or "us".
            progress: called with the fraction done.
            cancel: polled between tiles; returning True raises :class:`Cancelled`.

        Raises:
            InputError: for an image that is not 2D or 3D scalar.
            ValueError: for a bad strength or modality.
            Cancelled: when cancelled.
        """
        started = time.perf_counter()
        strength = parse_strength(strength)
        if modality != "auto" and modality not in MODALITIES:
            raise ValueError(f"modality must be one of auto, {', '.join(MODALITIES)}, got {modality!r}")
        array = volume.array
        if array.ndim not in (2, 3) or array.size == 0:
            raise InputError(f"{volume.source}: expected a non-empty 2D or 3D scalar image, got shape {array.shape}")
        messages: list[str] = []
        work = np.asarray(array, dtype=np.float32)
        if work.size and not np.isfinite(work).any():
            raise InputError(f"{volume.source}: every voxel is NaN or infinite; nothing to denoise")
        work, n_bad, fill = fill_non_finite(work)
        if n_bad:
            messages.append(
                f"{n_bad} NaN/infinite voxels were replaced by the median ({fill:g}) before denoising; "
                "the output holds denoised finite values there"
            )
        chosen = guess_modality(work, volume.modality if modality == "auto" else modality)
        normalizer = IntensityNormalizer.fit(work, chosen)
        if float(work.max()) == float(work.min()):
            messages.append("the image is constant: returned unchanged")
            return DenoiseResult(volume.with_array(work.copy()), 0.0, 0.0, chosen, "none",
                                 time.perf_counter() - started, messages)
        normalized = normalizer.normalize(work)
        del work
        estimated = estimate_noise_sigma(normalized)
        if isinstance(strength, float):
            level = strength / normalizer.scale
        else:
            level = estimated * STRENGTHS.get(strength, 1.0)
        low, high = self.model.card.noise_range
        if high and level > 1.5 * high:
            messages.append(
                f"noise level {level * normalizer.scale:.3g} is above what the model was trained for "
                f"({high * normalizer.scale:.3g}); the result may be smoother than expected"
            )
        volume3d = normalized if normalized.ndim == 3 else normalized[None]
        output, device_used = self._run_tiled(volume3d, level, progress, cancel, messages)
        output = output.reshape(array.shape)
        output *= np.float32(normalizer.scale)
        output += np.float32(normalizer.offset)
        return DenoiseResult(
            volume=volume.with_array(output),
            estimated_sigma=estimated * normalizer.scale,
            used_sigma=level * normalizer.scale,
            modality=chosen,
            device=device_used,
            seconds=time.perf_counter() - started,
            messages=messages,
        )

    def _predictor(self, level: float, device: torch.device):
        network = self.network
        use_amp = device.type == "cuda"
        channels_last = device.type == "cpu"

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

    def _run_tiled(self, volume, level, progress, cancel, messages) -> tuple[np.ndarray, str]:
        """Runs the tiles, shrinking them on GPU out-of-memory and falling back to the CPU at the end."""
        device, tile = self.device, self.tile_size
        multiple = self.model.card.network.size_multiple
        while True:
            try:
                out = sliding_window_inference(
                    volume, self._predictor(level, device), tile_size=tile, overlap=min(self.overlap, tile // 4),
                    size_multiple=multiple, device=device, progress=progress, cancel=cancel,
                )
                return out, str(device)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if tile // 2 >= _MIN_TILE:
                    tile //= 2
                    messages.append(f"GPU out of memory: retrying with {tile}³ tiles")
                    log.warning(messages[-1])
                    continue
                messages.append("GPU out of memory even with small tiles: finishing on the CPU (slower)")
                log.warning(messages[-1])
                device, tile = torch.device("cpu"), 160
                self.network = self.network.to(device)
