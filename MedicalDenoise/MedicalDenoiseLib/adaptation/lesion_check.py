"""Whether a model fitted to one scan still keeps small lesions as well as the shipped one.

Fitting to one scan teaches a network that scan's content; small faint structures the scan does not show (a
blob 1.5× the noise SD, about a millimetre) may become noise to it. On real MR, models fitted by
Recorrupted-to-Recorrupted kept 27–37 % of such lesions where the shipped model kept 57–100 %, while their
held-back loss improved (docs/benchmarks.md, *Adapting to the scan*): the held-back loss has no lesions and cannot
see this. So an adapted model must also pass this check. Lesions are inserted into a centred crop of the scan
(:mod:`..evaluation.lesion_retention`; they are new to the model wherever they are placed, so the crop need not
be held back) and both models denoise it exactly as the Denoiser will run them (same strides, same noise SD);
the adapted model is kept only if it keeps at least the shipped one's share minus ``LESION_TOLERANCE``. The
shipped model's share is measured before training, which also times the Denoiser on this machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation.crops import centre_crop
from ..evaluation.lesion_retention import measure_retention
from ..inference.denoiser import Denoiser
from ..io.volume import Volume
from ..models.model_files import LoadedModel

__all__ = ["LesionCheck", "lesion_retention", "check_voxels", "CROP", "LESION_TOLERANCE"]

CROP = (24, 160, 160)  # z, y, x voxels at most: a dozen lesions fit, and a pass costs seconds
# Retention measured on a dozen lesions varies by a few points between two similar models.
LESION_TOLERANCE = 0.10
_SEED = 0


@dataclass(frozen=True)
class LesionCheck:
    """Share of small inserted lesions each model kept (1: all of their amplitude)."""

    shipped: float
    adapted: float

    @property
    def passed(self) -> bool:
        return self.adapted >= self.shipped - LESION_TOLERANCE

    def describe(self) -> str:
        return f"small lesions kept {self.adapted:.0%} (shipped model {self.shipped:.0%})"


def check_voxels(shape: tuple[int, ...]) -> int:
    """Voxels in the crop the check denoises (twice per model: with and without lesions)."""
    return int(np.prod([min(n, c) for n, c in zip(shape, CROP)]))


def lesion_retention(model: LoadedModel, array: np.ndarray, like: Volume, modality: str,
                     strides: tuple[int, int, int], noise_sd: float, device: str, refine: bool = True) -> float:
    """Share of small lesions inserted into the centred crop of ``array`` (finite voxels, the scan's units) that
    ``model`` keeps, denoising as the Denoiser will: on ``strides`` sub-lattices, told ``noise_sd`` (the scan's
    units), Wiener-refined or not (``refine``). Both are fixed, so only the lesions differ between the two passes,
    and two models compare fairly.

    Raises:
        ValueError: when the crop has no flat place for a lesion (see ``insert_lesions``).
    """
    crop = centre_crop(np.asarray(array, dtype=np.float32), CROP)
    denoiser = Denoiser(model, device=device, refine=refine)

    def run(image: np.ndarray) -> np.ndarray:
        volume = Volume(image, like.geometry, modality=modality, source=like.source)
        return denoiser.denoise(volume, strength=noise_sd, modality=modality, grain=strides).volume.array

    return measure_retention(run, crop, np.random.default_rng(_SEED))
