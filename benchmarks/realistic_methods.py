"""The denoisers the realistic-noise benchmark compares, with what each is told.

Every method is a :class:`Method`: a display name and ``run(noisy, told) -> (output, note)``. :class:`Told` holds
everything any method may use; each reads only its share:

- the shipped (or given) models: nothing (blind, strength auto);
- BM4D told the PSD: the noise power spectrum of the simulation (``bm4d.bm4d(z, psd)``);
- BM4D told a white σ and DIPY non-local means: the realised noise SD;
- anisotropic diffusion, tuned: the clean image, to pick the best of 5 settings (oracle);
- Slicer's anisotropic diffusion: nothing (Filtering › Denoising › Curvature Anisotropic Diffusion at its
  defaults, conductance 1 and 5 iterations, ITK's stable time step, in physical spacing).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from _common import ensure_library_importable

ensure_library_importable()
from MedicalDenoiseLib.evaluation.baselines import (best_anisotropic_diffusion, bm4d_available,  # noqa: E402
                                                    bm4d_denoise, curvature_anisotropic_diffusion, dipy_available,
                                                    dipy_non_local_means)
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry, Volume  # noqa: E402

SLICER_DIFFUSION = (1.0, 5)  # Slicer's defaults: conductance, iterations
BM4D_PSD = "BM4D (told the noise PSD)"
BM4D_WHITE = "BM4D (told a white σ)"
DIFFUSION_TUNED = "anisotropic diffusion (oracle-tuned, best of 5)"
DIFFUSION_SLICER = "Slicer anisotropic diffusion (conductance 1, 5 iterations)"
DIPY = "DIPY non-local means (told σ)"
_BM4D_BLOCK = 5  # the largest edge of bm4d's default 3D blocks (4³ hard thresholding, 5³ Wiener)


@dataclass
class Told:
    """What a method may be told about one noisy image (each method reads only its own share).

    Attributes:
        clean: the noise-free acquisition; only oracle tuning reads it.
        data_range: the normalised range in image units (PSNR's peak).
        spacing: voxel size (z, y, x) or (y, x) in mm.
        modality: "ct", "mr" or "us".
        noise_sd: the SD of the realised noise (noisy − clean).
        psd: the noise power spectrum on this image's grid (``bm4d``'s convention), or None.
    """

    clean: np.ndarray
    data_range: float
    spacing: tuple[float, ...]
    modality: str
    noise_sd: float
    psd: np.ndarray | None = None


@dataclass(frozen=True)
class Method:
    """A denoiser with the name its rows carry; ``run(noisy, told) -> (output, note)``."""

    name: str
    run: Callable[[np.ndarray, Told], tuple[np.ndarray, str]]


def geometry_for(spacing: Sequence[float]) -> Geometry:
    """An axis-aligned grid of ``spacing`` (z, y, x) or (y, x): the models ignore geometry, Volume wants one."""
    xyz = tuple(float(s) for s in spacing[::-1])
    return Geometry(xyz, (0.0,) * len(xyz), tuple(np.eye(len(xyz)).ravel()))


def model_method(denoiser: Denoiser) -> Method:
    """A model, blind: it estimates the noise itself (strength auto)."""

    def run(noisy: np.ndarray, told: Told) -> tuple[np.ndarray, str]:
        result = denoiser.denoise(Volume(noisy, geometry_for(told.spacing)), strength="auto", modality=told.modality)
        return result.volume.array, f"estimated σ {result.estimated_sigma / told.data_range:.2%} of range"

    return Method(f"{denoiser.name} (blind)", run)


def _bm4d_module():
    """The ``bm4d`` package; bm4d 4.2.5 calls ``np.trapz``, which numpy 2 removed, so it is put back."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    return importlib.import_module("bm4d")


def _thin(image: np.ndarray) -> bool:
    """A stack thinner than BM4D's 3D blocks (5 voxels): it is denoised slice by slice, as 2D images."""
    return image.ndim == 3 and image.shape[0] < _BM4D_BLOCK


def slice_psd(psd: np.ndarray) -> np.ndarray:
    """The mean 2D PSD of the slices of noise whose 3D PSD is ``psd``: ``mean over k_z / n_z`` (Parseval
    along z)."""
    return psd.mean(axis=0) / psd.shape[0]


def bm4d_with_psd(noisy: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """BM4D told the noise power spectrum ``psd`` (same shape as ``noisy``; ``N σ²`` everywhere is white).

    A thin stack runs slice by slice with the slices' mean 2D PSD (:func:`slice_psd`)."""
    if psd.shape != noisy.shape:
        raise ValueError(f"psd shape must equal the image's {noisy.shape}, got {psd.shape}")
    if _thin(noisy):
        return np.stack([bm4d_with_psd(plane, slice_psd(psd)) for plane in noisy])
    denoised = _bm4d_module().bm4d(noisy.astype(np.float32), psd.astype(np.float64))
    return np.asarray(denoised).reshape(noisy.shape).astype(np.float32)


def _bm4d_psd(noisy: np.ndarray, told: Told) -> tuple[np.ndarray, str]:
    if told.psd is None:
        raise ValueError("no noise PSD was estimated for this image")
    return bm4d_with_psd(noisy, told.psd), ("PSD = mean |FFT|² of independent realisations of the simulated noise"
                                            + (", slice by slice" if _thin(noisy) else ""))


def _bm4d_white(noisy: np.ndarray, told: Told) -> tuple[np.ndarray, str]:
    _bm4d_module()
    planes = noisy if _thin(noisy) else [noisy]
    out = np.stack([bm4d_denoise(plane, told.noise_sd) for plane in planes]).reshape(noisy.shape)
    return out, f"σ = {told.noise_sd / told.data_range:.2%} of range" + (", slice by slice" if _thin(noisy) else "")


def _diffusion_tuned(noisy: np.ndarray, told: Told) -> tuple[np.ndarray, str]:
    out, (conductance, iterations) = best_anisotropic_diffusion(noisy, told.clean, told.data_range, told.spacing)
    return out, f"conductance {conductance:g}, {iterations} iterations"


def slicer_diffusion(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Slicer's Curvature Anisotropic Diffusion at its defaults. ITK scales the conductance by the image's
    mean gradient, so the result does not depend on the intensity unit."""
    return curvature_anisotropic_diffusion(image, *SLICER_DIFFUSION, spacing=spacing)


def _diffusion_slicer(noisy: np.ndarray, told: Told) -> tuple[np.ndarray, str]:
    return slicer_diffusion(noisy, told.spacing), ""


def _dipy(noisy: np.ndarray, told: Told) -> tuple[np.ndarray, str]:
    # Magnitude MR is Rician at one coil and near it with several: DIPY's Rician mode is its MR setting.
    rician = told.modality == "mr" and float(noisy.min()) >= 0
    return (dipy_non_local_means(noisy, told.noise_sd, rician),
            f"σ = {told.noise_sd / told.data_range:.2%} of range, rician={rician}")


def baseline_methods(skip: Sequence[str] = ()) -> tuple[list[Method], list[str]]:
    """The classical methods in table order, less those whose name contains a ``skip`` word or whose package
    is missing; and one note per method left out for a missing package."""
    candidates = [Method(BM4D_PSD, _bm4d_psd), Method(BM4D_WHITE, _bm4d_white),
                  Method(DIFFUSION_TUNED, _diffusion_tuned), Method(DIFFUSION_SLICER, _diffusion_slicer),
                  Method(DIPY, _dipy)]
    missing = {BM4D_PSD: not bm4d_available(), BM4D_WHITE: not bm4d_available(), DIPY: not dipy_available()}
    chosen, notes = [], []
    for method in candidates:
        if any(word.lower() in method.name.lower() for word in skip):
            continue
        if missing.get(method.name):
            notes.append(f"{method.name}: not run, its package is not installed (`pip install -e \".[baselines]\"`)")
            continue
        chosen.append(method)
    return chosen, notes


def is_bm4d(method: Method) -> bool:
    """BM4D runs on the small centre crop only (it is slow)."""
    return method.name in (BM4D_PSD, BM4D_WHITE)
