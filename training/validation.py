"""Validation on the held-out volumes: PSNR and SSIM against clean references, or the held-out
self-supervised loss when there are none.

Each held-out volume contributes one crop around its foreground (``validation.crop``, shrunk to the volume
and the network's size multiple). Synthetic and GAN modes add noise at each ``validation.sigmas`` level with
a generator of their own, made once, so every validation of a run (and of a resumed run) scores the same
inputs and never draws from the training generator. PSNR and SSIM are in normalised units with a data
range of 1 (CT: 2000 HU; MR and US: the 99.5th percentile of the signal).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from MedicalDenoiseLib.evaluation.metrics import psnr, ssim3d

from .conditioning import estimate_levels
from .noise_source import PatchNoise
from .config import TrainConfig
from .modes.base import Runtime
from .subsampling import neighbour_pairs, subsample_numpy
from .volumes import TrainingVolume

__all__ = ["Validator"]

_VALIDATION_STREAM = 7919  # mixed into the seed: validation noise never shares the training stream


@dataclass
class _Item:
    name: str
    noisy: np.ndarray
    clean: np.ndarray | None
    sigma: float | None = None
    g1: np.ndarray | None = None
    g2: np.ndarray | None = None


def _crop(volume: TrainingVolume, crop: tuple[int, ...], multiples: tuple[int, ...]) -> tuple[slice, ...] | None:
    shape = [min(c, n) // m * m for c, n, m in zip(crop, volume.shape, multiples)]
    if min(shape) == 0:
        return None
    centre = volume.foreground.mean(axis=0) if len(volume.foreground) else np.array(volume.shape) / 2
    start = [int(np.clip(round(c - s / 2), 0, n - s)) for c, s, n in zip(centre, shape, volume.shape)]
    return tuple(slice(b, b + s) for b, s in zip(start, shape))


class Validator:
    """Scores a denoiser on fixed crops of the validation volumes.

    Args:
        volumes: the held-out volumes.
        source: "synthetic", "paired" or "self-supervised" (what the volumes hold).
        config: crop, noise levels, seed.
        multiples: crop extents are multiples of these (z, y, x).
    """

    def __init__(self, volumes: list[TrainingVolume], source: str, config: TrainConfig, multiples: tuple[int, ...],
                 conditioning: str | None = "noise-sd") -> None:
        self.source = source
        self.conditioning = conditioning
        self.min_sigma = config.noise.sigma_range[0]
        rng = np.random.default_rng([config.seed, _VALIDATION_STREAM])
        self.items: list[_Item] = []
        for volume in volumes:
            region = _crop(volume, config.validation.crop, multiples)
            if region is None:
                continue
            image = np.ascontiguousarray(volume.image[region])
            if source == "synthetic":
                for sigma in config.validation.sigmas:
                    # One slot per level: a kind drawn from the modality's list, white kinds at exactly this
                    # level, physics kinds with parameters drawn from their ranges; the target is the
                    # realisation's clean image (for MR k-space and speckle it differs from the crop).
                    noise = PatchNoise({volume.modality: config.noise.kinds[volume.modality]}, (sigma, sigma))
                    realised = noise.simulate(noise.draw(volume.modality, rng), image, rng)
                    self.items.append(_Item(f"{volume.name}@{sigma:g}", realised.noisy, realised.clean, sigma))
            elif source == "paired":
                self.items.append(_Item(volume.name, image, np.ascontiguousarray(volume.target[region])))
            else:
                first, second = neighbour_pairs(rng, (1, *image.shape))
                self.items.append(_Item(volume.name, image, None, None, subsample_numpy(image[None], first)[0],
                                        subsample_numpy(image[None], second)[0]))

    @property
    def best_metric(self) -> tuple[str, bool]:
        """The metric that picks the best checkpoint and whether higher is better."""
        return ("val_n2n", False) if self.source == "self-supervised" else ("val_psnr", True)

    @property
    def empty(self) -> bool:
        return not self.items

    def metric_names(self, sigmas: tuple[float, ...] = ()) -> list[str]:
        if self.source == "self-supervised":
            return ["val_n2n"]
        names = ["val_psnr", "val_ssim", "val_psnr_input"]
        return names + [f"val_psnr_{s:g}" for s in sigmas] if self.source == "synthetic" else names

    def _run(self, network: nn.Module, image: np.ndarray, runtime: Runtime) -> np.ndarray:
        level = torch.from_numpy(estimate_levels(image[None], self.conditioning)).to(runtime.device)
        x = torch.from_numpy(image)[None, None].to(runtime.device)
        with runtime.autocast():
            return network(x, level).float()[0, 0].cpu().numpy()

    @torch.no_grad()
    def __call__(self, network: nn.Module, runtime: Runtime) -> dict[str, float]:
        """Metrics of the bare (unwrapped) ``network``; it is left in training mode."""
        network.eval()
        try:
            if self.source == "self-supervised":
                losses = []
                for item in self.items:
                    out = self._run(network, item.g1, runtime)
                    sigma = max(float(estimate_levels(item.g1[None])[0]), self.min_sigma)
                    losses.append(float(np.mean((out - item.g2) ** 2)) / sigma**2)
                return {"val_n2n": float(np.mean(losses))}
            rows = []
            for item in self.items:
                out = self._run(network, item.noisy, runtime)
                rows.append((item.sigma, psnr(item.clean, out, 1.0), ssim3d(item.clean, out, 1.0),
                             psnr(item.clean, item.noisy, 1.0)))
        finally:
            network.train()
        metrics = {"val_psnr": float(np.mean([r[1] for r in rows])), "val_ssim": float(np.mean([r[2] for r in rows])),
                   "val_psnr_input": float(np.mean([r[3] for r in rows]))}
        if self.source == "synthetic":
            for sigma in sorted({r[0] for r in rows}):
                metrics[f"val_psnr_{sigma:g}"] = float(np.mean([r[1] for r in rows if r[0] == sigma]))
        return metrics
