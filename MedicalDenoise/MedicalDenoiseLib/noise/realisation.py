"""What a noise simulation returns, and what it may be told about where the image came from.

Physics models change more than the noise: an MR acquisition that samples less of k-space also blurs, and an
ultrasound frame is log-compressed. A training pair therefore needs the noisy image *and* the same
acquisition without noise; :class:`NoiseRealisation` carries both, and the noise itself is their difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["NoiseContext", "NoiseRealisation", "realise"]


@dataclass(frozen=True)
class NoiseContext:
    """Optional facts about the image a model may use; every field may be left out.

    Attributes:
        spacing: voxel size in mm, ``(z, y, x)`` (or ``(y, x)`` for 2D images).
        projections: for CT, the precomputed line integrals of the whole volume the image was cut from
            (:class:`~MedicalDenoiseLib.noise.ct_sinograms.SliceSinograms`): the noise then follows the
            attenuation of the full slices, not only of the patch.
        origin: index ``(z, y, x)`` of the image's first voxel inside that volume.
    """

    spacing: tuple[float, ...] | None = None
    projections: Any = None
    origin: tuple[int, ...] = (0, 0, 0)


@dataclass(frozen=True)
class NoiseRealisation:
    """One simulated acquisition.

    Attributes:
        noisy: float32, the image with noise, same shape as the input.
        clean: float32, the same acquisition without noise: the training target. For image-domain models it
            is the input itself; for k-space MR it is the zero-filled reconstruction without noise.
        sigma: standard deviation of ``noisy - clean`` over the voxels the model acts on (CT leaves voxels
            outside the scan's field of view untouched and does not count them), in image units.
        params: the parameters the model ran with (drawn ones included), for logs and model cards.
    """

    noisy: np.ndarray
    clean: np.ndarray
    sigma: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def noise(self) -> np.ndarray:
        """The noise realisation, ``noisy - clean`` (float32, image units)."""
        return self.noisy - self.clean


def realise(model: Callable, image: np.ndarray, rng: np.random.Generator,
            context: NoiseContext | None = None) -> NoiseRealisation:
    """Runs any noise model and returns a :class:`NoiseRealisation`.

    Physics models (those with a ``simulate`` method) return their own; a plain ``model(image, rng)``
    callable such as :class:`~MedicalDenoiseLib.noise.image_domain.GaussianNoise` only adds noise, so its
    clean target is the input.
    """
    simulate = getattr(model, "simulate", None)
    if simulate is not None:
        return simulate(image, rng, context)
    clean = np.asarray(image, dtype=np.float32)
    noisy = np.asarray(model(image, rng), dtype=np.float32)
    return NoiseRealisation(noisy, clean, float(np.std(noisy - clean)), _public_fields(model))


def _public_fields(model: Callable) -> dict[str, Any]:
    fields = getattr(model, "__dataclass_fields__", {})
    return {name: getattr(model, name) for name in fields}
