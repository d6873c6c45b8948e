"""Training batches: patches sampled, augmented, made noisy (synthetic) or sub-sampled (self-supervised).

Every random choice comes from one ``numpy.random.Generator`` per process, and each batch carries that
generator's state after it was made. A checkpoint stores the state of the last batch *used*, so a resumed
run draws exactly the batches the uninterrupted run would have, whether or not batches were prepared ahead
in a background thread.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .augment import Augmenter
from .conditioning import estimate_levels
from .config import TrainConfig
from .noise_source import PatchNoise
from .patches import PatchSampler, extract
from .sublattice_batches import full_patch_shape, on_sublattices
from .subsampling import neighbour_pairs, subsample_numpy
from .synthetic_phantoms import random_phantom
from .volumes import TrainingVolume

__all__ = ["Batch", "BatchMaker", "BatchStream", "SOURCES"]

SOURCES = ("synthetic", "paired", "self-supervised")


@dataclass
class Batch:
    """One step's data, float32 in normalised units.

    Attributes:
        noisy: ``(B, D, H, W)`` network input (full resolution).
        clean: ``(B, D, H, W)`` target, or None without one (self-supervised).
        levels: ``(B,)`` blind noise estimate of each noisy patch: the conditioning channel.
        sigma: ``(B,)`` noise level for the loss weights (1/σ², or 1/σ for L1): the level drawn
            (synthetic), the SD of noisy − clean (paired) or the blind estimate (self-supervised), clamped at
            the noise range's minimum and softened by the floor: ``sqrt(max(σ, min)² + floor²)``.
        extras: mode-specific arrays (self-supervised: ``g1``, ``g2``, ``g1_levels``, ``first``, ``second``;
            synthetic with ``noise.noisier2noise``: ``alpha2``, ``(σ_added / σ_target)²`` per sample, inf for
            an exactly clean target).
        rng_state: the generator's state after this batch was made.
    """

    noisy: np.ndarray
    clean: np.ndarray | None
    levels: np.ndarray
    sigma: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    rng_state: dict[str, Any] = field(default_factory=dict)

    @property
    def voxels(self) -> int:
        return int(self.noisy.size)


class BatchMaker:
    """Makes batches of one kind from the training volumes.

    Args:
        source: "synthetic" (clean volumes + library noise), "paired" (noisy volumes with clean targets) or
            "self-supervised" (noisy volumes only, neighbour sub-sampled).
        volumes: the training volumes.
        config: the run's config (patch size, batch size, noise, augmentation).
        multiples: each patch extent must be a multiple of these (z, y, x).
        conditioning: the level the network is told (:func:`~training.conditioning.estimate_levels`);
            None for a blind network.
    """

    def __init__(self, source: str, volumes: list[TrainingVolume], config: TrainConfig, multiples: tuple[int, ...],
                 conditioning: str | None = "noise-sd") -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        self.source = source
        self.conditioning = conditioning
        self.volumes = volumes
        self.batch_size = config.data.batch_size
        self.strides = tuple(config.data.sublattice)
        self.patch_size = full_patch_shape(config.data.patch_size, self.strides)
        self.phantom_fraction = config.data.phantom_fraction if source == "synthetic" else 0.0
        self.sampler = PatchSampler(volumes, self.patch_size, full_patch_shape(multiples, self.strides),
                                    config.data.foreground_probability)
        self.augment = Augmenter(config.augment, artefacts=source != "self-supervised")
        self.min_sigma = config.noise.sigma_range[0]
        self.weight_floor = config.noise.weight_floor
        self.noise = PatchNoise(config.noise.kinds, config.noise.sigma_range,
                                {kind: config.noise.kind_ranges(kind) for kind in config.noise.ranges})
        self.noisier2noise = config.noise.noisier2noise and source == "synthetic"

    def __call__(self, rng: np.random.Generator) -> Batch:
        batch = self._make(rng)
        return batch if max(self.strides) == 1 else on_sublattices(batch, self.strides)

    def _make(self, rng: np.random.Generator) -> Batch:
        if self.phantom_fraction and rng.random() < self.phantom_fraction:
            return self._phantom_batch(rng)
        shape, refs = self.sampler.sample(rng, self.batch_size)
        noisy, clean, sigma = [], [], []
        for ref in refs:
            volume = self.volumes[ref.volume]
            if self.source == "synthetic":
                pair, drawn = self._synthetic_pair(volume, ref, shape, rng)
                noisy.append(pair[0])
                clean.append(pair[1])
                sigma.append(drawn)
                continue
            channels = [extract(volume.image, ref, shape)]
            if self.source == "paired":
                channels.append(extract(volume.target, ref, shape))
            patch = self.augment(np.stack(channels), volume.modality, rng)
            if self.source == "paired":
                noisy.append(patch[0])
                clean.append(patch[1])
                sigma.append(float(np.std(patch[0] - patch[1])))
            else:
                noisy.append(patch[0])
        noisy_batch = np.stack(noisy).astype(np.float32)
        levels = estimate_levels(noisy_batch, self.conditioning)
        level = np.maximum(np.array(sigma if sigma else levels, dtype=np.float32), np.float32(self.min_sigma))
        batch = Batch(noisy_batch, np.stack(clean).astype(np.float32) if clean else None, levels,
                      np.sqrt(level**2 + np.float32(self.weight_floor) ** 2))
        if self.noisier2noise:
            own = np.array([self.volumes[ref.volume].noise_level for ref in refs], dtype=np.float32)
            added = np.array(sigma, dtype=np.float32)
            with np.errstate(divide="ignore"):
                batch.extras = {"alpha2": np.where(own > 0, (added / np.maximum(own, 1e-12)) ** 2, np.inf)
                                .astype(np.float32)}
        if self.source == "self-supervised":
            first, second = neighbour_pairs(rng, noisy_batch.shape)
            g1 = subsample_numpy(noisy_batch, first)
            batch.extras = {"g1": g1, "g2": subsample_numpy(noisy_batch, second), "g1_levels": estimate_levels(g1, self.conditioning),
                            "first": first, "second": second}
        batch.rng_state = rng.bit_generator.state
        return batch

    def _synthetic_pair(self, volume: TrainingVolume, ref, shape, rng: np.random.Generator
                        ) -> tuple[np.ndarray, float]:
        """``(2, D, H, W)`` noisy and target patch, and the realised noise SD.

        Noise that depends on the whole slice is drawn at the patch's place first and both channels are
        augmented alike; any other noise is drawn on the augmented clean patch (thick slices and artefacts
        belong to the anatomy, not to the noise).
        """
        model = self.noise.draw(volume.modality, rng)
        if self.noise.needs_whole_slices(model):
            raw = np.ascontiguousarray(extract(volume.image, ref, shape))
            realised = self.noise.simulate(model, raw, rng, volume, ref.volume, ref.start)
            pair = self.augment(np.stack([realised.noisy, realised.clean]), volume.modality, rng)
            return pair, float(np.std(pair[0] - pair[1]))
        patch = self.augment(np.stack([extract(volume.image, ref, shape)]), volume.modality, rng)[0]
        realised = self.noise.simulate(model, patch, rng)
        return np.stack([realised.noisy, realised.clean]), realised.sigma

    def _phantom_batch(self, rng: np.random.Generator) -> Batch:
        """Noise-free procedural phantoms with MR-style noise (the phantoms' intensities are MR-like)."""
        phantoms = [random_phantom(self.patch_size, rng) for _ in range(self.batch_size)]
        realised = [self.noise.simulate(self.noise.draw("mr", rng), patch, rng) for patch in phantoms]
        noisy_batch = np.stack([r.noisy for r in realised]).astype(np.float32)
        clean = np.stack([r.clean for r in realised])
        sigma = [r.sigma for r in realised]
        level = np.maximum(np.array(sigma, dtype=np.float32), np.float32(self.min_sigma))
        batch = Batch(noisy_batch, clean.astype(np.float32), estimate_levels(noisy_batch, self.conditioning),
                      np.sqrt(level**2 + np.float32(self.weight_floor) ** 2))
        if self.noisier2noise:  # phantoms are exactly clean: nothing to correct
            batch.extras = {"alpha2": np.full(len(clean), np.inf, dtype=np.float32)}
        batch.rng_state = rng.bit_generator.state
        return batch


class BatchStream:
    """Batches in order, made in the calling thread (``prefetch`` 0) or up to ``prefetch`` ahead in a thread.

    The generator must not be touched by anyone else while the stream is open.
    """

    def __init__(self, maker: BatchMaker, rng: np.random.Generator, prefetch: int = 0) -> None:
        self.maker, self.rng, self.prefetch = maker, rng, prefetch
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if prefetch > 0:
            self._queue = queue.Queue(maxsize=prefetch)
            self._thread = threading.Thread(target=self._produce, name="batch-prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        while not self._stop.is_set():
            try:
                item: Any = self.maker(self.rng)
            except BaseException as exc:  # handed to the consumer, which raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)  # type: ignore[union-attr]
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> Batch:
        if self._queue is None:
            return self.maker(self.rng)
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
