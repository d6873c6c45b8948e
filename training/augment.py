"""Augmentation of training patches: flips, intensity scaling, thick-slice simulation and MRI artefacts.

The artefacts come from TorchIO (``RandomAnisotropy``, ``RandomBiasField``, ``RandomMotion``,
``RandomGhosting``), applied to a patch whose channels (noisy and clean for paired data) share one draw of
parameters. TorchIO draws from torch's global generator; each call runs inside ``torch.random.fork_rng``
seeded from the run's numpy generator, so a run stays reproducible and resumable from that generator alone.

They are applied to the clean patch before synthetic noise is added: thick slices blur anatomy, not the
noise, and a model must learn to keep artefacts it cannot undo rather than treat them as noise.
Self-supervised mode uses flips and intensity scaling only: resampling or k-space artefacts applied to a
noisy image would correlate its noise, which Neighbor2Neighbor assumes independent between neighbours.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import AugmentConfig

__all__ = ["Augmenter"]

_BIAS_COEFFICIENTS = 0.25
_MOTION_DEGREES = 3.0
_MOTION_TRANSLATION = 3.0
_GHOSTS = (2, 6)
_GHOST_INTENSITY = (0.1, 0.4)


class Augmenter:
    """Augments one patch at a time.

    Args:
        config: probabilities and ranges.
        artefacts: allow thick-slice simulation and MRI artefacts (False for noisy-only data).
    """

    def __init__(self, config: AugmentConfig, artefacts: bool = True) -> None:
        self.config = config
        self.artefacts = artefacts
        self._transforms: dict | None = None

    def __call__(self, channels: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
        """Augments ``channels`` ``(C, D, H, W)`` (all channels alike); returns a new float32 array."""
        cfg = self.config
        out = channels
        if cfg.flips:
            for axis in (1, 2, 3):
                if rng.random() < 0.5:
                    out = np.flip(out, axis)
            if out.shape[2] == out.shape[3] and rng.random() < 0.5:
                out = out.transpose(0, 1, 3, 2)
        low, high = cfg.intensity_scale
        if (low, high) != (1.0, 1.0):
            out = out * np.float32(rng.uniform(low, high))
        if self.artefacts:
            chosen = []
            # Thick slices need a through-plane axis: a single-slice patch has none.
            if out.shape[1] > 1 and rng.random() < cfg.anisotropy:
                chosen.append("anisotropy")
            if modality == "mr":
                chosen += [name for name in ("bias_field", "motion", "ghosting") if rng.random() < getattr(cfg, name)]
            if chosen:
                out = self._torchio(np.ascontiguousarray(out, dtype=np.float32), chosen, int(rng.integers(2**31)))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _build(self) -> dict:
        import torchio as tio

        cfg = self.config
        # TorchIO tensors are (C, x, y, z): our (C, z, y, x) patch is permuted, so its axis 2 is our z.
        return {
            "anisotropy": tio.RandomAnisotropy(axes=(2,), downsampling=cfg.anisotropy_factor),
            "bias_field": tio.RandomBiasField(coefficients=_BIAS_COEFFICIENTS),
            "motion": tio.RandomMotion(degrees=_MOTION_DEGREES, translation=_MOTION_TRANSLATION, num_transforms=1),
            "ghosting": tio.RandomGhosting(num_ghosts=_GHOSTS, axes=(0, 1), intensity=_GHOST_INTENSITY),
        }

    def _torchio(self, patch: np.ndarray, names: list[str], seed: int) -> np.ndarray:
        import torchio as tio

        if self._transforms is None:
            self._transforms = self._build()
        image = tio.ScalarImage(tensor=torch.from_numpy(patch).permute(0, 3, 2, 1).contiguous())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name in names:
                image = self._transforms[name](image)
        return image.data.permute(0, 3, 2, 1).numpy()
