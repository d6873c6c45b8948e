"""Classical denoisers to compare the networks against.

Each takes a float array, 2D ``(y, x)`` or 3D ``(z, y, x)``, and returns an array of the same shape and float
dtype (float32 for integer input). ``best_*`` functions are **oracle-tuned**: they try a small parameter grid
and keep the result with the best PSNR against the clean image. That is the most favourable setting a
classical method can get (a user without a clean image could not reproduce it), so a network that beats it
beats any hand-tuned use of the method.

:data:`BASELINES` maps a display name to a runner ``(noisy, clean, sigma, data_range, spacing=None,
noise_kind=None) -> (denoised, parameters)`` for the evaluate command; ``sigma`` is the true noise SD in the
array's units and ``noise_kind`` the noise model's name (``"rician"`` switches DIPY's NLM to its Rician
mode; the other runners ignore it). BM4D (pip ``bm4d``) and DIPY's NLM (pip ``dipy``), both optional, are
listed only when installed.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .metrics import psnr

__all__ = [
    "gaussian_smoothing",
    "best_gaussian_smoothing",
    "curvature_anisotropic_diffusion",
    "best_anisotropic_diffusion",
    "total_variation",
    "best_total_variation",
    "non_local_means",
    "bm4d_denoise",
    "bm4d_available",
    "dipy_non_local_means",
    "dipy_available",
    "BaselineRunner",
    "BASELINES",
]

GAUSSIAN_SIGMAS_PX = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
# (conductance, iterations): ITK scales the conductance by the image's mean gradient magnitude, so these are
# relative values. The 3 x 2 grid of conductance (0.5, 1, 2) x iterations (5, 10) less (0.5, 10), which never
# won on a T1 head crop at 3-10 % noise (the optima were (0.5, 5), (1, 5) and (2, 5) there).
DIFFUSION_SETTINGS = ((0.5, 5), (1.0, 5), (1.0, 10), (2.0, 5), (2.0, 10))
# TV weights as fractions of the data range (the weight is in intensity units); on a T1 head crop the optimum
# was about 0.01 / 0.02 / 0.07 at 3 / 5 / 10 % noise, so the grid is dense at the low end.
TV_WEIGHTS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15)

_P = TypeVar("_P")
BaselineRunner = Callable[..., "tuple[np.ndarray, str]"]
"""``(noisy, clean, sigma, data_range, spacing=None, noise_kind=None) -> (denoised, description of the
parameters used)``."""
# DIPY's defaults for its classic NLM: 3³ patches compared over an 11³ search block. The classic method, not
# the blockwise one that dipy 1.12 made the default: on a T1 crop blockwise made 1 % noise worse (40.0 dB in,
# 35.6 out) and lost 0.8 dB at 5 %; classic gave 42.1 and 33.1 dB, at about 55 s per 128³ on one core.
DIPY_METHOD = "classic"
DIPY_PATCH_RADIUS = 1
DIPY_BLOCK_RADIUS = 5


def _check_array(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(f"array must be a non-empty 2D or 3D array, got shape {array.shape}")
    return array


def _output_dtype(array: np.ndarray) -> np.dtype:
    return array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)


def _relative_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray | None:
    """Spacing in (z, y, x) order divided by its smallest value, so the finest axis counts as 1 voxel."""
    if spacing is None:
        return None
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (ndim,) or not np.all(values > 0):
        raise ValueError(f"spacing must be {ndim} positive values in (z, y, x) order, got {tuple(spacing)}")
    return values / values.min()


def gaussian_smoothing(array: np.ndarray, sigma_px: float, spacing: Sequence[float] | None = None
                       ) -> np.ndarray:
    """Gaussian filter.

    Args:
        array: image, shape (z, y, x) or (y, x).
        sigma_px: kernel SD in voxels (of the finest axis when ``spacing`` is given).
        spacing: optional voxel size in (z, y, x) order, to make the kernel isotropic in millimetres.

    Returns:
        The smoothed image, same shape and float dtype.
    """
    array = _check_array(array)
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    relative = _relative_spacing(spacing, array.ndim)
    sigmas = sigma_px if relative is None else tuple(sigma_px / relative)
    return ndimage.gaussian_filter(array.astype(np.float64), sigma=sigmas).astype(_output_dtype(array))


def _best_by_psnr(candidates: Iterable[tuple[np.ndarray, _P]], clean: np.ndarray, data_range: float
                  ) -> tuple[np.ndarray, _P]:
    # max() over a generator keeps only the best result so far in memory, not the whole grid.
    return max(candidates, key=lambda pair: psnr(clean, pair[0], data_range))


def best_gaussian_smoothing(noisy: np.ndarray, clean: np.ndarray, data_range: float,
                            spacing: Sequence[float] | None = None) -> tuple[np.ndarray, float]:
    """Oracle-tuned Gaussian filter: the best PSNR over ``sigma_px`` in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0).

    Args:
        noisy: noisy image, shape (z, y, x) or (y, x).
        clean: clean reference of the same shape, used only to pick the parameter.
        data_range: width of the clean image's range, for PSNR.
        spacing: optional voxel size, as in :func:`gaussian_smoothing`.

    Returns:
        ``(denoised, sigma_px)``.
    """
    return _best_by_psnr(((gaussian_smoothing(noisy, s, spacing), s) for s in GAUSSIAN_SIGMAS_PX), clean,
                         data_range)


def curvature_anisotropic_diffusion(array: np.ndarray, conductance: float, iterations: int,
                                    time_step: float | None = None,
                                    spacing: Sequence[float] | None = None) -> np.ndarray:
    """SimpleITK ``CurvatureAnisotropicDiffusionImageFilter`` (modified curvature diffusion, Whitaker).

    Args:
        array: image, shape (z, y, x) or (y, x); filtered as a float32 SimpleITK image.
        conductance: edge-stopping parameter, passed through; ITK multiplies it by the image's mean gradient
            magnitude, so it is relative (1 keeps edges clearly above the mean gradient) and unit-free.
        iterations: number of diffusion steps (> 0).
        time_step: step size, at most 0.0625 in 3D and 0.125 in 2D for stability (the default).
        spacing: optional voxel size in (z, y, x) order; diffusion then follows physical distances, scaled so
            the finest axis has unit spacing (which keeps the time-step limit above valid).

    Returns:
        The filtered image, same shape and float dtype.
    """
    array = _check_array(array)
    limit = 0.5 / 2**array.ndim
    time_step = limit if time_step is None else float(time_step)
    if not 0 < time_step <= limit:
        raise ValueError(f"time_step must be in (0, {limit}] for a {array.ndim}D image, got {time_step}")
    if not conductance > 0:
        raise ValueError(f"conductance must be > 0, got {conductance}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations}")
    image = sitk.GetImageFromArray(array.astype(np.float32))
    relative = _relative_spacing(spacing, array.ndim)
    if relative is not None:
        image.SetSpacing(tuple(float(s) for s in relative[::-1]))  # SimpleITK wants (x, y, z)
    diffusion = sitk.CurvatureAnisotropicDiffusionImageFilter()
    diffusion.SetConductanceParameter(float(conductance))
    diffusion.SetNumberOfIterations(int(iterations))
    diffusion.SetTimeStep(time_step)
    return sitk.GetArrayFromImage(diffusion.Execute(image)).astype(_output_dtype(array))


def best_anisotropic_diffusion(noisy: np.ndarray, clean: np.ndarray, data_range: float,
                               spacing: Sequence[float] | None = None
                               ) -> tuple[np.ndarray, tuple[float, int]]:
    """Oracle-tuned curvature anisotropic diffusion: the best PSNR over 5 (conductance, iterations) settings.

    The image is scaled to [0, 1] by ``data_range`` for filtering and back after, so the float32 filter sees
    like magnitudes for CT in HU and for MR (ITK's relative conductance already makes the result scale-free).

    Args:
        noisy: noisy image, shape (z, y, x) or (y, x).
        clean: clean reference of the same shape, used only to pick the parameters.
        data_range: width of the clean image's range.
        spacing: optional voxel size, as in :func:`curvature_anisotropic_diffusion`.

    Returns:
        ``(denoised, (conductance, iterations))``.
    """
    noisy = _check_array(noisy)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    offset = float(np.min(noisy))
    scaled = (noisy.astype(np.float64) - offset) / data_range

    def run(conductance: float, iterations: int) -> np.ndarray:
        filtered = curvature_anisotropic_diffusion(scaled, conductance, iterations, spacing=spacing)
        return (filtered.astype(np.float64) * data_range + offset).astype(_output_dtype(noisy))

    return _best_by_psnr(((run(c, n), (c, n)) for c, n in DIFFUSION_SETTINGS), clean, data_range)


def total_variation(array: np.ndarray, weight: float) -> np.ndarray:
    """Total-variation denoising (scikit-image ``denoise_tv_chambolle``, all axes).

    Args:
        array: image, shape (z, y, x) or (y, x).
        weight: regularisation strength in the array's intensity units (larger = smoother).

    Returns:
        The denoised image, same shape and float dtype.
    """
    array = _check_array(array)
    if not weight > 0:
        raise ValueError(f"weight must be > 0, got {weight}")
    from skimage.restoration import denoise_tv_chambolle  # only evaluation needs scikit-image

    return denoise_tv_chambolle(array.astype(np.float64), weight=weight).astype(_output_dtype(array))


def best_total_variation(noisy: np.ndarray, clean: np.ndarray, data_range: float
                         ) -> tuple[np.ndarray, float]:
    """Oracle-tuned TV: the best PSNR over weights (0.005 … 0.15) × ``data_range``.

    Args:
        noisy: noisy image, shape (z, y, x) or (y, x).
        clean: clean reference of the same shape, used only to pick the weight.
        data_range: width of the clean image's range; the weights scale with it.

    Returns:
        ``(denoised, weight)`` with the weight in intensity units.
    """
    weights = [w * data_range for w in TV_WEIGHTS]
    return _best_by_psnr(((total_variation(noisy, w), w) for w in weights), clean, data_range)


def non_local_means(array: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means (scikit-image ``denoise_nl_means``, fast mode, 5-voxel patches, search radius 6).

    Args:
        array: image, shape (z, y, x) or (y, x).
        sigma: noise SD in the array's units; the filter strength is ``h = 0.8 sigma``.

    Returns:
        The denoised image, same shape and float dtype.
    """
    array = _check_array(array)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    from skimage.restoration import denoise_nl_means  # only evaluation needs scikit-image

    denoised = denoise_nl_means(array.astype(np.float64), patch_size=5, patch_distance=6, h=0.8 * sigma,
                                sigma=sigma, fast_mode=True, channel_axis=None)
    return np.asarray(denoised).astype(_output_dtype(array))


def bm4d_available() -> bool:
    """Whether the optional ``bm4d`` package is installed (it is not a dependency: binary-only, slow)."""
    return importlib.util.find_spec("bm4d") is not None


def bm4d_denoise(array: np.ndarray, sigma: float) -> np.ndarray:
    """BM4D (Mäkinen et al.) from the pip ``bm4d`` package, told the noise SD.

    Args:
        array: image, shape (z, y, x) or (y, x).
        sigma: noise SD in the array's units (white Gaussian noise assumed).

    Returns:
        The denoised image, same shape and float dtype.

    Raises:
        ImportError: ``bm4d`` is not installed.
    """
    array = _check_array(array)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    try:
        bm4d = importlib.import_module("bm4d")
    except ImportError as error:
        raise ImportError("BM4D baseline needs `pip install bm4d`") from error
    # bm4d returns (y, x, 1) for a 2D input; the reshape restores the caller's shape.
    denoised = bm4d.bm4d(array.astype(np.float32), float(sigma))
    return np.asarray(denoised).reshape(array.shape).astype(_output_dtype(array))


def dipy_available() -> bool:
    """Whether the optional ``dipy`` package is installed (a large dependency, used for this baseline only)."""
    return importlib.util.find_spec("dipy") is not None


def dipy_non_local_means(array: np.ndarray, sigma: float, rician: bool) -> np.ndarray:
    """Non-local means from DIPY (``dipy.denoise.nlmeans.nlmeans``, classic method), told the noise SD.

    DIPY's Rician mode corrects the bias that magnitude noise adds in dark regions, which the other
    baselines cannot. Patch radius 1 and search-block radius 5 (DIPY's defaults for the classic method).

    DIPY expects non-negative data (negative values came back as garbage), so for ``rician=False`` the array
    is shifted to start one range-width above 0 for filtering and shifted back after. Rician mode needs the
    magnitude data as it is (the bias correction depends on absolute intensity).

    Args:
        array: image, shape (z, y, x) or (y, x) (filtered as one slice).
        sigma: noise SD in the array's units (for Rician noise: the SD of each complex channel).
        rician: True for MR magnitude (Rician) noise, False for additive Gaussian noise.

    Returns:
        The denoised image, same shape and float dtype.

    Raises:
        ImportError: ``dipy`` is not installed.
        ValueError: a bad sigma, or negative values with ``rician=True`` (magnitude data is never negative).
    """
    array = _check_array(array)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    try:
        nlmeans = importlib.import_module("dipy.denoise.nlmeans").nlmeans
    except ImportError as error:
        raise ImportError("DIPY NLM baseline needs `pip install dipy`") from error
    work = array.astype(np.float64).reshape(array.shape if array.ndim == 3 else (1, *array.shape))
    low, high = float(work.min()), float(work.max())
    if rician and low < 0:
        raise ValueError(f"Rician NLM needs non-negative magnitude data, got a minimum of {low:g}")
    shift = 0.0 if rician else (high - low if high > low else 1.0) - low
    # DIPY mishandles axes shorter than its search window (a single slice came back as NaN, or partly
    # unfiltered and differently from run to run), so such axes are mirror-padded to the window and cut back.
    window = 2 * (DIPY_PATCH_RADIUS + DIPY_BLOCK_RADIUS) + 1
    pads = [((window - n + 1) // 2, (window - n) // 2) if n < window else (0, 0) for n in work.shape]
    denoised = nlmeans(np.pad(work + shift, pads, mode="symmetric"), float(sigma), patch_radius=DIPY_PATCH_RADIUS,
                       block_radius=DIPY_BLOCK_RADIUS, rician=bool(rician), method=DIPY_METHOD)
    inside = tuple(slice(before, before + n) for (before, _), n in zip(pads, work.shape))
    return (np.asarray(denoised, dtype=np.float64)[inside] - shift).reshape(array.shape).astype(_output_dtype(array))


def _run_gaussian(noisy: np.ndarray, clean: np.ndarray, sigma: float, data_range: float,
                  spacing: Sequence[float] | None = None, noise_kind: str | None = None
                  ) -> tuple[np.ndarray, str]:
    denoised, sigma_px = best_gaussian_smoothing(noisy, clean, data_range, spacing)
    return denoised, f"sigma = {sigma_px:g} px"


def _run_diffusion(noisy: np.ndarray, clean: np.ndarray, sigma: float, data_range: float,
                   spacing: Sequence[float] | None = None, noise_kind: str | None = None
                   ) -> tuple[np.ndarray, str]:
    denoised, (conductance, iterations) = best_anisotropic_diffusion(noisy, clean, data_range, spacing)
    return denoised, f"conductance {conductance:g}, {iterations} iterations"


def _run_total_variation(noisy: np.ndarray, clean: np.ndarray, sigma: float, data_range: float,
                         spacing: Sequence[float] | None = None, noise_kind: str | None = None
                         ) -> tuple[np.ndarray, str]:
    denoised, weight = best_total_variation(noisy, clean, data_range)
    return denoised, f"weight {weight:.4g} ({weight / data_range:g} of range)"


def _run_non_local_means(noisy: np.ndarray, clean: np.ndarray, sigma: float, data_range: float,
                         spacing: Sequence[float] | None = None, noise_kind: str | None = None
                         ) -> tuple[np.ndarray, str]:
    return non_local_means(noisy, sigma), f"h = 0.8 sigma = {0.8 * sigma:.4g}, patch 5, distance 6"


def _run_bm4d(noisy: np.ndarray, clean: np.ndarray, sigma: float, data_range: float, spacing: object = None,
              noise_kind: str | None = None) -> tuple[np.ndarray, str]:
    return bm4d_denoise(noisy, sigma), f"sigma = {sigma:.4g}"


def _run_dipy_nlm(noisy: np.ndarray, clean: np.ndarray, sigma: float, data_range: float, spacing: object = None,
                  noise_kind: str | None = None) -> tuple[np.ndarray, str]:
    rician = noise_kind == "rician"
    return (dipy_non_local_means(noisy, sigma, rician),
            f"sigma = {sigma:.4g}, rician={rician}, {DIPY_METHOD}, patch radius {DIPY_PATCH_RADIUS}, "
            f"block radius {DIPY_BLOCK_RADIUS}")


BASELINES: dict[str, BaselineRunner] = {
    "gaussian (best σ)": _run_gaussian,
    "anisotropic diffusion (best of 5)": _run_diffusion,
    "total variation (best weight)": _run_total_variation,
    "non-local means": _run_non_local_means,
}
if dipy_available():
    BASELINES["DIPY NLM (true σ, Rician-aware)"] = _run_dipy_nlm
if bm4d_available():
    BASELINES["BM4D (true σ)"] = _run_bm4d
