"""Tests of MedicalDenoiseLib.metrics on tiny seeded phantoms."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from MedicalDenoiseLib.metrics import (
    edge_preservation,
    high_frequency_power_ratio,
    psnr,
    residual_statistics,
    residual_structure_correlation,
    ssim3d,
)


def make_phantom(size: int = 24) -> np.ndarray:
    """A cube and two spheres of different intensity on a dark background, values in [0, 1]."""
    z, y, x = np.mgrid[:size, :size, :size]
    phantom = np.full((size, size, size), 0.1)
    phantom[3:10, 3:10, 3:10] = 0.9
    phantom[(z - 15) ** 2 + (y - 14) ** 2 + (x - 15) ** 2 < 30] = 0.6
    phantom[(z - 6) ** 2 + (y - 17) ** 2 + (x - 17) ** 2 < 8] = 0.35
    return phantom


@pytest.fixture
def phantom() -> np.ndarray:
    return make_phantom()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_psnr_matches_formula(rng):
    reference = rng.random((6, 7, 8))
    test = reference + rng.normal(0, 0.05, reference.shape)
    mse = np.mean((reference - test) ** 2)
    assert psnr(reference, test, data_range=2.0) == pytest.approx(10 * math.log10(4.0 / mse))
    # A constant error of 0.1 on a unit range is exactly 20 dB.
    assert psnr(np.zeros((4, 5)), np.full((4, 5), 0.1), data_range=1.0) == pytest.approx(20.0)


def test_psnr_identical_is_inf(phantom):
    assert psnr(phantom, phantom.copy(), data_range=1.0) == math.inf


def test_psnr_mask_ignores_errors_outside(phantom, rng):
    test = phantom.copy()
    test[:, :, :8] += rng.normal(0, 0.1, test[:, :, :8].shape)
    mask = np.zeros(phantom.shape, dtype=bool)
    mask[:, :, 12:] = True
    assert psnr(phantom, test, 1.0, mask=mask) == math.inf
    assert psnr(phantom, test, 1.0) < 30


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_psnr_rejects_bad_data_range(phantom, bad):
    with pytest.raises(ValueError, match="data_range"):
        psnr(phantom, phantom, bad)


def test_shape_mismatch_and_bad_masks_raise(phantom):
    with pytest.raises(ValueError, match="shape"):
        ssim3d(phantom, phantom[:-1], 1.0)
    with pytest.raises(ValueError, match="mask shape"):
        psnr(phantom, phantom, 1.0, mask=np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="all-False"):
        ssim3d(phantom, phantom, 1.0, mask=np.zeros(phantom.shape, dtype=bool))


def test_ssim_identical_is_one(phantom):
    assert ssim3d(phantom, phantom.copy(), 1.0) == pytest.approx(1.0, abs=1e-9)


def test_ssim_decreases_with_noise_level(phantom, rng):
    noise = rng.normal(0, 1, phantom.shape)
    scores = [ssim3d(phantom, phantom + sigma * noise, 1.0) for sigma in (0.01, 0.03, 0.1, 0.3)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 1.0


def test_ssim_matches_scikit_image_on_a_large_enough_volume(phantom, rng):
    noisy = phantom + rng.normal(0, 0.1, phantom.shape)
    expected = structural_similarity(phantom, noisy, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim3d(phantom, noisy, 1.0) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("shape", [(1, 5, 7), (2, 2, 7), (3, 16, 16), (8, 9, 10), (1, 1, 1), (5, 7), (2, 9)])
def test_ssim_tiny_shapes_give_a_number(shape, rng):
    reference = rng.random(shape)
    noisy = reference + rng.normal(0, 0.2, shape)
    score = ssim3d(reference, noisy, 1.0)
    assert math.isfinite(score) and -1.0 <= score < 1.0
    assert ssim3d(reference, reference, 1.0) == pytest.approx(1.0, abs=1e-9)


def test_ssim_of_one_slice_volume_equals_2d(rng):
    reference = rng.random((1, 12, 14))
    noisy = reference + rng.normal(0, 0.1, reference.shape)
    assert ssim3d(reference, noisy, 1.0) == pytest.approx(ssim3d(reference[0], noisy[0], 1.0))


def test_ssim_2d(phantom, rng):
    image = phantom[12]
    noisy = image + rng.normal(0, 0.1, image.shape)
    expected = structural_similarity(image, noisy, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim3d(image, noisy, 1.0) == pytest.approx(expected, rel=1e-9)


def test_ssim_mask_sees_only_its_region(phantom, rng):
    test = phantom.copy()
    test[:, :, :8] += rng.normal(0, 0.1, test[:, :, :8].shape)
    far = np.zeros(phantom.shape, dtype=bool)
    far[:, :, 16:] = True  # beyond the Gaussian window's 5-voxel radius from the noise
    near = ~far
    assert ssim3d(phantom, test, 1.0, mask=far) == pytest.approx(1.0, abs=1e-9)
    assert ssim3d(phantom, test, 1.0, mask=near) < 0.9
    assert ssim3d(phantom, test, 1.0) < 1.0


def test_residual_statistics_of_white_noise(rng):
    noise = rng.normal(0.0, 0.1, (24, 24, 24))
    stats = residual_statistics(noise, np.zeros_like(noise))
    assert set(stats) == {"mean", "std", "lag1_autocorrelation"}
    assert abs(stats["mean"]) < 0.005
    assert stats["std"] == pytest.approx(0.1, rel=0.05)
    assert abs(stats["lag1_autocorrelation"]) < 0.05


def test_residual_statistics_of_smoothed_noise_is_correlated(rng):
    smooth = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (24, 24, 24)), 1.0)
    assert residual_statistics(smooth, np.zeros_like(smooth))["lag1_autocorrelation"] > 0.5


def test_residual_statistics_with_mask_and_2d(rng):
    noise = rng.normal(0.0, 1.0, (32, 32))
    mask = np.zeros(noise.shape, dtype=bool)
    mask[:, :16] = True
    noisy = noise.copy()
    noisy[:, 16:] = ndimage.gaussian_filter(noise, 2.0)[:, 16:] + 5.0  # outside the mask: ignored
    stats = residual_statistics(noisy, np.zeros_like(noisy), mask=mask)
    assert abs(stats["mean"]) < 0.2
    assert abs(stats["lag1_autocorrelation"]) < 0.1


def test_edge_preservation(phantom, rng):
    assert edge_preservation(phantom, phantom.copy()) == pytest.approx(1.0)
    assert edge_preservation(phantom, ndimage.gaussian_filter(phantom, 1.5)) < 0.99
    # Correlation ignores scale: a contrast change keeps the edges.
    assert edge_preservation(phantom, 2.0 * phantom + 1.0) == pytest.approx(1.0)


def test_residual_structure_correlation(phantom, rng):
    noise = rng.normal(0, 0.1, phantom.shape)
    noisy = phantom + noise
    # A perfect denoiser: the residual is the noise alone.
    assert abs(residual_structure_correlation(phantom, noisy, phantom)) < 0.1
    # A denoiser that also erased the fine detail: the residual is noise plus exactly that detail.
    detail = phantom - ndimage.gaussian_filter(phantom, 2.0)
    assert residual_structure_correlation(phantom, noisy, noisy - detail) == pytest.approx(1.0)
    assert residual_structure_correlation(phantom, noisy, phantom - detail) > 0.5


def test_high_frequency_power_ratio(phantom, rng):
    assert high_frequency_power_ratio(phantom, phantom.copy()) == pytest.approx(1.0)
    assert high_frequency_power_ratio(phantom, ndimage.gaussian_filter(phantom, 1.0)) < 0.5
    assert high_frequency_power_ratio(phantom, phantom + rng.normal(0, 0.1, phantom.shape)) > 1.0
    assert high_frequency_power_ratio(phantom[12], ndimage.gaussian_filter(phantom[12], 1.0)) < 0.5
