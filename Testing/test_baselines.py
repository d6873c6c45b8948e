"""Tests of MedicalDenoiseLib.evaluation.baselines on a 24³ seeded phantom with Gaussian noise at 10 % of the range."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import ndimage

from MedicalDenoiseLib.evaluation import baselines
from MedicalDenoiseLib.evaluation.baselines import (
    BASELINES,
    DIFFUSION_SETTINGS,
    GAUSSIAN_SIGMAS_PX,
    TV_WEIGHTS,
    best_anisotropic_diffusion,
    best_gaussian_smoothing,
    best_total_variation,
    bm4d_available,
    bm4d_denoise,
    curvature_anisotropic_diffusion,
    dipy_available,
    dipy_non_local_means,
    gaussian_smoothing,
    non_local_means,
    total_variation,
)

SIGMA = 0.1  # noise SD, as a fraction of the unit data range


def make_phantom(size: int = 24) -> np.ndarray:
    """A cube and two spheres of different intensity on a dark background, values in [0, 1]."""
    z, y, x = np.mgrid[:size, :size, :size]
    phantom = np.full((size, size, size), 0.1, dtype=np.float32)
    phantom[3:10, 3:10, 3:10] = 0.9
    phantom[(z - 15) ** 2 + (y - 14) ** 2 + (x - 15) ** 2 < 30] = 0.6
    phantom[(z - 6) ** 2 + (y - 17) ** 2 + (x - 17) ** 2 < 8] = 0.35
    return phantom


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy), both float32 (24, 24, 24)."""
    clean = make_phantom()
    noisy = clean + np.random.default_rng(7).normal(0, SIGMA, clean.shape).astype(np.float32)
    return clean, noisy


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def assert_denoised(output: np.ndarray, clean: np.ndarray, noisy: np.ndarray) -> None:
    assert output.shape == noisy.shape
    assert output.dtype == noisy.dtype
    assert mse(output, clean) < 0.8 * mse(noisy, clean)


def test_registry_names():
    expected = {"gaussian (best σ)", "anisotropic diffusion (best of 5)", "total variation (best weight)",
                "non-local means"}
    assert expected <= set(BASELINES)
    assert ("BM4D (true σ)" in BASELINES) == bm4d_available()
    assert ("DIPY NLM (true σ, Rician-aware)" in BASELINES) == dipy_available()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_registered_baseline_reduces_mse(name, pair):
    clean, noisy = pair
    denoised, description = BASELINES[name](noisy, clean, SIGMA, 1.0)
    assert_denoised(denoised, clean, noisy)
    assert isinstance(description, str) and description
    # The noise kind is an optional keyword every runner accepts (only DIPY's NLM uses it).
    assert BASELINES[name](noisy, clean, SIGMA, 1.0, noise_kind="gaussian")[0].shape == noisy.shape


def test_best_gaussian_picks_from_its_grid(pair):
    clean, noisy = pair
    denoised, sigma_px = best_gaussian_smoothing(noisy, clean, 1.0)
    assert sigma_px in GAUSSIAN_SIGMAS_PX
    np.testing.assert_array_equal(denoised, gaussian_smoothing(noisy, sigma_px))
    assert_denoised(denoised, clean, noisy)


def test_best_anisotropic_diffusion_picks_from_its_grid(pair):
    clean, noisy = pair
    denoised, setting = best_anisotropic_diffusion(noisy, clean, 1.0)
    assert setting in DIFFUSION_SETTINGS
    assert_denoised(denoised, clean, noisy)
    # "Best" means best: no setting of the grid scores higher than the one returned.
    offset = float(noisy.min())
    scores = {s: psnr_of(clean, curvature_anisotropic_diffusion(noisy - offset, *s) + offset) for s in DIFFUSION_SETTINGS}
    assert psnr_of(clean, denoised) == pytest.approx(max(scores.values()), abs=1e-3)
    assert scores[setting] == pytest.approx(max(scores.values()), abs=1e-3)


def test_anisotropic_diffusion_does_not_depend_on_intensity_scale(pair):
    # best_anisotropic_diffusion rescales by data_range; CT-like units must give the same choice and result.
    clean, noisy = pair
    denoised, setting = best_anisotropic_diffusion(noisy, clean, 1.0)
    scaled, scaled_setting = best_anisotropic_diffusion(noisy * 1000 - 500, clean * 1000 - 500, 1000.0)
    assert scaled_setting == setting
    np.testing.assert_allclose((scaled + 500) / 1000, denoised, atol=1e-4)


def test_best_total_variation_picks_from_its_grid(pair):
    clean, noisy = pair
    denoised, weight = best_total_variation(noisy, clean, 2.0)  # weights scale with the data range
    assert any(weight == pytest.approx(2.0 * w) for w in TV_WEIGHTS)
    assert_denoised(denoised, clean, noisy)


def test_single_baselines_reduce_mse(pair):
    clean, noisy = pair
    assert_denoised(gaussian_smoothing(noisy, 1.0), clean, noisy)
    assert_denoised(curvature_anisotropic_diffusion(noisy, 1.0, 5), clean, noisy)
    assert_denoised(total_variation(noisy, 0.07), clean, noisy)
    assert_denoised(non_local_means(noisy, SIGMA), clean, noisy)


def test_2d_input_and_float64_dtype(pair):
    clean, noisy = pair
    clean2d, noisy2d = clean[12].astype(np.float64), noisy[12].astype(np.float64)
    for output in (gaussian_smoothing(noisy2d, 1.0), curvature_anisotropic_diffusion(noisy2d, 1.0, 5),
                   total_variation(noisy2d, 0.07), non_local_means(noisy2d, SIGMA)):
        assert_denoised(output, clean2d, noisy2d)


def test_integer_input_gives_float32():
    image = (np.arange(16 * 16).reshape(16, 16) % 7).astype(np.int16)
    assert gaussian_smoothing(image, 1.0).dtype == np.float32


def test_gaussian_spacing_makes_kernel_isotropic_in_mm(pair):
    _, noisy = pair
    expected = ndimage.gaussian_filter(noisy.astype(np.float64), sigma=(0.5, 1.0, 1.0)).astype(np.float32)
    np.testing.assert_allclose(gaussian_smoothing(noisy, 1.0, spacing=(2.0, 1.0, 1.0)), expected, atol=1e-6)


def test_anisotropic_diffusion_with_spacing_runs(pair):
    clean, noisy = pair
    assert_denoised(curvature_anisotropic_diffusion(noisy, 1.0, 5, spacing=(1.5, 0.75, 0.75)), clean, noisy)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: curvature_anisotropic_diffusion(a, 1.0, 5, time_step=0.1), r"in \(0, 0.0625\] for a 3D"),
        (lambda a: curvature_anisotropic_diffusion(a[0], 1.0, 5, time_step=0.2), r"\(0, 0.125\] for a 2D"),
        (lambda a: curvature_anisotropic_diffusion(a, 1.0, 0), "iterations"),
        (lambda a: curvature_anisotropic_diffusion(a, 0.0, 5), "conductance"),
        (lambda a: gaussian_smoothing(a, 1.0, spacing=(1.0, 1.0)), "spacing must be 3 positive values"),
        (lambda a: non_local_means(a, 0.0), "sigma must be > 0"),
        (lambda a: total_variation(a[None], 0.1), "2D or 3D"),
    ],
)
def test_invalid_parameters_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.zeros((4, 5, 6), dtype=np.float32))


def test_bm4d_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm4d", None)  # makes `import bm4d` raise ImportError
    with pytest.raises(ImportError, match="BM4D baseline needs `pip install bm4d`"):
        bm4d_denoise(np.zeros((8, 8, 8), dtype=np.float32), 0.1)


def test_bm4d_denoises(pair):
    pytest.importorskip("bm4d")
    clean, noisy = pair
    assert baselines.bm4d_available()
    assert_denoised(bm4d_denoise(noisy, SIGMA), clean, noisy)
    assert_denoised(bm4d_denoise(noisy[12], SIGMA), clean[12], noisy[12])


def test_dipy_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dipy.denoise.nlmeans", None)
    with pytest.raises(ImportError, match="DIPY NLM baseline needs `pip install dipy`"):
        dipy_non_local_means(np.zeros((8, 8, 8), dtype=np.float32), 0.1, rician=False)


def psnr_of(clean: np.ndarray, image: np.ndarray) -> float:
    return 10 * np.log10(1.0 / mse(clean, image))


def test_dipy_nlm_improves_psnr_gaussian_shifted_and_2d(pair):
    pytest.importorskip("dipy")
    clean, noisy = pair
    denoised = dipy_non_local_means(noisy, SIGMA, rician=False)
    assert_denoised(denoised, clean, noisy)
    assert psnr_of(clean, denoised) > psnr_of(clean, noisy) + 3
    # Negative intensities (CT-like offsets) are shifted internally, so the result follows the shift.
    shifted = dipy_non_local_means(noisy - 2.0, SIGMA, rician=False)
    assert psnr_of(clean - 2.0, shifted) > psnr_of(clean, noisy) + 3
    # A single slice is padded for DIPY, which otherwise left parts of it unfiltered, varying run to run.
    single = dipy_non_local_means(noisy[12], SIGMA, rician=False)
    assert_denoised(single, clean[12], noisy[12])
    np.testing.assert_array_equal(dipy_non_local_means(noisy[12], SIGMA, rician=False), single)


def test_dipy_nlm_rician_mode_improves_psnr_and_is_chosen_by_noise_kind(pair):
    pytest.importorskip("dipy")
    clean, _ = pair
    rng = np.random.default_rng(11)
    noisy = np.hypot(clean + rng.normal(0, SIGMA, clean.shape), rng.normal(0, SIGMA, clean.shape)).astype(np.float32)
    runner = BASELINES["DIPY NLM (true σ, Rician-aware)"]
    denoised, description = runner(noisy, clean, SIGMA, 1.0, noise_kind="rician")
    assert "rician=True" in description
    assert psnr_of(clean, denoised) > psnr_of(clean, noisy) + 3
    assert "rician=False" in runner(noisy, clean, SIGMA, 1.0)[1]


def test_dipy_rician_rejects_negative_values():
    pytest.importorskip("dipy")
    with pytest.raises(ValueError, match="non-negative magnitude"):
        dipy_non_local_means(np.full((8, 8, 8), -1.0, dtype=np.float32), 0.1, rician=True)
