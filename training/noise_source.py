"""The synthetic noise of training patches: a kind drawn per patch from the modality's list, its parameters
from the library's training ranges, and the target it defines.

Physics kinds change the target too (an MR acquisition that samples less k-space blurs; a B-mode image is
log-compressed), so a patch's target is the realisation's ``clean``, never the input patch. CT projection
noise must see the attenuation of whole slices, not of the patch alone, so each CT volume's line integrals
are computed once (``SliceSinograms``) and the noise is drawn at the patch's place in its volume, before any
flip or transpose moves the patch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from MedicalDenoiseLib.noise.ct_sinograms import SliceSinograms
from MedicalDenoiseLib.noise.kinds import noise_kind
from MedicalDenoiseLib.noise.parameter_ranges import LogUniform
from MedicalDenoiseLib.noise.random_model import RandomNoiseModel
from MedicalDenoiseLib.noise.realisation import NoiseContext, NoiseRealisation

from .volumes import TrainingVolume

__all__ = ["PatchNoise", "NEEDS_WHOLE_SLICES"]

#: Kinds whose noise depends on the whole slice the patch was cut from.
NEEDS_WHOLE_SLICES = ("ct-projection",)


class PatchNoise:
    """Draws a noise kind and its parameters per patch and simulates it.

    Args:
        kinds: modality → the kind names to choose from, uniformly (``MedicalDenoiseLib.noise.NOISE_KINDS``).
        sigma_range: ``(low, high)`` in normalised units for the kinds whose level is one ``sigma`` (white,
            Rician, FBP-shaped CT, MR k-space); the physics kinds keep their own ranges for the rest (dose,
            k-space fraction, PSF).
        ranges: kind → parameter → range object replacing the library's (after ``sigma_range``).
    """

    def __init__(self, kinds: dict[str, tuple[str, ...]], sigma_range: tuple[float, float],
                 ranges: dict[str, dict[str, Any]] | None = None) -> None:
        level = LogUniform(*sigma_range)
        self._models: dict[str, list[RandomNoiseModel]] = {}
        for modality, names in kinds.items():
            models = []
            for name in names:
                kind = noise_kind(name)
                overrides = {"sigma": level} if name != "speckle" and "sigma" in kind.ranges else {}
                models.append(kind.random(**{**overrides, **(ranges or {}).get(name, {})}))
            self._models[modality] = models
        self._sinograms: dict[int, SliceSinograms] = {}

    def draw(self, modality: str, rng: np.random.Generator) -> RandomNoiseModel:
        """The kind this patch gets."""
        models = self._models[modality]
        return models[int(rng.integers(len(models)))]

    @staticmethod
    def needs_whole_slices(model: RandomNoiseModel) -> bool:
        return model.name in NEEDS_WHOLE_SLICES

    def simulate(self, model: RandomNoiseModel, patch: np.ndarray, rng: np.random.Generator,
                 volume: TrainingVolume | None = None, index: int = 0,
                 start: tuple[int, int, int] = (0, 0, 0)) -> NoiseRealisation:
        """Noisy patch, its target and the realised noise SD (normalised units).

        Args:
            model: from :meth:`draw`.
            patch: ``(D, H, W)`` float32, normalised.
            volume, index, start: for kinds that need whole slices, the volume the patch was cut from, its
                index (the cache key) and the patch's first voxel in it.
        """
        context: Any = None
        if self.needs_whole_slices(model) and volume is not None:
            context = NoiseContext(spacing=tuple(volume.spacing), projections=self._projections(volume, index),
                                   origin=tuple(start))
        return model.simulate(patch, rng, context)

    def _projections(self, volume: TrainingVolume, index: int) -> SliceSinograms:
        if index not in self._sinograms:
            ct = noise_kind("ct-projection").ranges
            self._sinograms[index] = SliceSinograms(volume.image, float(volume.spacing[-1]),
                                                    hu_offset=ct["hu_offset"], hu_per_unit=ct["hu_per_unit"])
        return self._sinograms[index]
