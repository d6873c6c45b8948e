"""Tests of MedicalDenoiseLib.evaluation.metrics on tiny seeded phantoms."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from MedicalDenoiseLib.evaluation.metrics import (
    edge_preservation,
    error_sd_ratio,
    high_frequency_power_ratio,
    psnr,
    residual_statistics,
    residual_structure_correlation,
    ssim3d,
)
from MedicalDenoiseLib.evaluation.reference_free import (
    edge_sharpness,
    flat_region_mask,
    flat_region_noise_sd,
    foreground_mask,
    strong_edge_mask,
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


def test_error_sd_ratio_is_one_for_the_input_zero_for_perfect_and_tells_smoothing_from_invented_texture(
        phantom, rng):
    noise = rng.normal(0, 0.1, phantom.shape)
    noisy = phantom + noise
    assert error_sd_ratio(phantom, noisy, noisy) == pytest.approx(1.0)
    assert error_sd_ratio(phantom, noisy, phantom + 0.3) == pytest.approx(0.0)  # an offset is no error here
    assert error_sd_ratio(phantom, noisy, phantom + 0.5 * noise) == pytest.approx(0.5)
    flat = flat_region_mask(phantom)
    smoothed = ndimage.gaussian_filter(noisy, 1.5)
    invented = phantom + ndimage.gaussian_filter(rng.normal(0, 0.3, phantom.shape), 0.7)  # new fine texture
    assert error_sd_ratio(phantom, noisy, smoothed, flat) < 0.4
    assert error_sd_ratio(phantom, noisy, invented, flat) > 2 * error_sd_ratio(phantom, noisy, smoothed, flat)
    # Only the masked voxels count: noise left on one half, none on the other.
    half = np.zeros(phantom.shape, bool)
    half[:12] = True
    assert error_sd_ratio(phantom, noisy, np.where(half, noisy, phantom), half) == pytest.approx(1.0)
    assert error_sd_ratio(phantom, noisy, np.where(half, noisy, phantom), ~half) == pytest.approx(0.0)


def test_error_sd_ratio_without_input_error_is_nan_and_checks_its_mask(phantom):
    assert math.isnan(error_sd_ratio(phantom, phantom.copy(), phantom + 0.1))
    with pytest.raises(ValueError, match="mask"):
        error_sd_ratio(phantom, phantom, phantom, np.zeros(phantom.shape, bool))


def step_phantom(shape=(6, 48, 48)) -> np.ndarray:
    """Two flat halves (0.2 and 0.8) split along x: large flat regions and one strong straight edge."""
    image = np.full(shape, 0.2)
    image[..., shape[-1] // 2:] = 0.8
    return image


@pytest.mark.parametrize("sigma", [0.02, 0.08])
def test_flat_region_noise_sd_recovers_known_sigma(rng, sigma):
    clean = step_phantom()
    noisy = clean + rng.normal(0, sigma, clean.shape)
    flat = flat_region_mask(noisy)
    assert flat.sum() == pytest.approx(0.25 * flat.size, rel=0.05)
    assert not flat[..., 22:26].any()  # the edge is never "flat"
    assert flat_region_noise_sd(noisy, flat) == pytest.approx(sigma, rel=0.1)
    # On the same voxels, a smoothed copy has far less noise left; the clean image has none.
    assert flat_region_noise_sd(ndimage.gaussian_filter(noisy, 2.0), flat) < 0.4 * sigma
    assert flat_region_noise_sd(clean, flat) < 1e-9


def test_flat_region_noise_sd_2d_and_foreground(rng):
    image = np.zeros((40, 40))
    image[8:32, 8:32] = 0.5
    noisy = image + rng.normal(0, 0.05, image.shape)
    foreground = foreground_mask(noisy, threshold=0.25, dilation=0, smoothing_sigma=1.0)
    assert foreground[12:28, 12:28].all() and not foreground[:4].any()
    flat = flat_region_mask(noisy, foreground, fraction=0.5)
    assert not (flat & ~foreground).any()
    assert flat_region_noise_sd(noisy, flat) == pytest.approx(0.05, rel=0.15)


def test_edge_sharpness_drops_with_blur_not_with_denoising(rng):
    clean = step_phantom()
    noisy = clean + rng.normal(0, 0.03, clean.shape)
    edges = strong_edge_mask(noisy)
    assert edges[..., 22:26].sum() >= 0.9 * edges.sum()  # found on the step
    sharp = edge_sharpness(noisy, edges)
    assert edge_sharpness(clean, edges) == pytest.approx(sharp, rel=0.1)  # noise does not inflate it
    blurred = ndimage.gaussian_filter(clean, (0, 2.5, 2.5))
    assert edge_sharpness(blurred, edges) < 0.75 * edge_sharpness(clean, edges)


def test_foreground_mask_dilates_and_validates():
    image = np.zeros((9, 9, 9))
    image[4, 4, 4] = 1.0
    assert foreground_mask(image, dilation=0).sum() == 1
    assert foreground_mask(image, dilation=1).sum() == 7  # the voxel and its 6 face neighbours
    with pytest.raises(ValueError, match="dilation"):
        foreground_mask(image, dilation=-1)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flat_region_mask(np.zeros((4, 2, 9))), "3 x 3 voxels in-plane"),
        (lambda: flat_region_mask(np.zeros((4, 9, 9)), fraction=0), r"fraction must be in \(0, 1\]"),
        (lambda: flat_region_noise_sd(np.zeros((4, 9, 9)), np.ones((4, 9, 9), bool), window=4), "odd"),
        (lambda: edge_sharpness(np.zeros((4, 9, 9)), np.zeros((4, 9, 9), bool)), "all-False"),
    ],
)
def test_reference_free_metrics_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
