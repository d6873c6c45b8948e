from __future__ import annotations

import numpy as np
import pytest

from conftest import phantom
from MedicalDenoiseLib.inference.noise_estimation import estimate_noise_sigma


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.1])
def test_estimates_white_noise_on_structured_image(sigma):
    clean = phantom((40, 64, 64))
    noisy = clean + np.random.default_rng(0).normal(0, sigma, clean.shape)
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.15)


def test_zeroed_background_is_ignored():
    clean = phantom((30, 48, 48))
    noisy = clean + np.random.default_rng(1).normal(0, 0.05, clean.shape)
    noisy[:, :, :20] = 0.0  # skull-stripped MR: large exactly-zero regions
    assert estimate_noise_sigma(noisy) == pytest.approx(0.05, rel=0.15)


def test_units_follow_the_image():
    noisy = phantom((20, 48, 48)) + np.random.default_rng(2).normal(0, 0.04, (20, 48, 48))
    assert estimate_noise_sigma(noisy * 1000) == pytest.approx(1000 * estimate_noise_sigma(noisy), rel=1e-6)


def test_constant_tiny_2d_and_nonfinite_inputs():
    assert estimate_noise_sigma(np.full((5, 6, 7), 3.0)) == 0.0
    assert estimate_noise_sigma(np.zeros((3, 2, 7))) == 0.0
    image2d = np.random.default_rng(3).normal(0, 0.2, (64, 64))
    assert estimate_noise_sigma(image2d) == pytest.approx(0.2, rel=0.1)
    with_nan = image2d.copy()
    with_nan[10, 10] = np.nan
    with_nan[20, 20] = np.inf
    assert np.isfinite(estimate_noise_sigma(with_nan))
    assert estimate_noise_sigma(with_nan) == pytest.approx(0.2, rel=0.1)
