"""k-space MR acquisition: Rician statistics at full sampling, SD and sinc correlation of zero-filling, partial
Fourier, 2D versus 3D acquisition, root-sum-of-squares coils (non-central chi, noise varying in space)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from MedicalDenoiseLib.noise.mr_kspace import MRKSpaceNoise, coil_sensitivities, kspace_mask

SIGMA = 0.05


def correlation(noise: np.ndarray, axis: int, lag: int = 1) -> float:
    """Lag correlation with wrap-around (k-space noise is periodic on the grid)."""
    a = noise - noise.mean()
    return float(np.mean(a * np.roll(a, lag, axis=axis)) / a.var())


def dirichlet(m: int, n: int) -> float:
    """Lag-1 correlation of white noise band-limited to the central m of n frequencies."""
    return math.sin(math.pi * m / n) / (m * math.sin(math.pi / n))


def simulate(image, seed=0, **params):
    return MRKSpaceNoise(SIGMA, **params).simulate(image, np.random.default_rng(seed))


def test_full_sampling_with_one_coil_is_rician():
    background = simulate(np.zeros((16, 48, 48), np.float32)).noisy
    assert background.mean() == pytest.approx(SIGMA * math.sqrt(math.pi / 2), rel=0.02)
    assert background.std() == pytest.approx(SIGMA * math.sqrt(2 - math.pi / 2), rel=0.03)
    bright = simulate(np.ones((16, 48, 48), np.float32))
    assert bright.noise.std() == pytest.approx(SIGMA, rel=0.02)
    assert abs(bright.noise.mean()) < 0.1 * SIGMA  # the Rician bias σ²/2A is small at SNR 20
    assert abs(correlation(bright.noise, 2)) < 0.03
    np.testing.assert_allclose(bright.clean, 1.0, atol=1e-5)


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_zero_filling_lowers_the_sd_and_correlates_neighbours_like_a_sinc(fraction):
    n = 64
    result = simulate(np.ones((16, n, n), np.float32), acquired=(1.0, 1.0, fraction))
    m = round(fraction * n)
    assert result.noise.std() == pytest.approx(SIGMA * math.sqrt(m / n), rel=0.03)
    assert result.sigma == pytest.approx(result.params["expected_sd"], rel=0.03)
    assert correlation(result.noise, 2) == pytest.approx(dirichlet(m, n), abs=0.03)
    assert abs(correlation(result.noise, 1)) < 0.03


def test_partial_fourier_keeps_only_its_share_of_the_noise_power():
    n = 64
    result = simulate(np.ones((16, n, n), np.float32), partial_fourier=0.625, partial_fourier_axis=-2)
    kept = kspace_mask(n, 1.0, 0.625).sum() / n
    assert kept == pytest.approx(0.625, abs=0.02)
    assert result.noise.std() == pytest.approx(SIGMA * math.sqrt(kept), rel=0.03)
    # Without conjugate synthesis the zero-filled half blurs edges along y only.
    edge = np.zeros((4, n, n), np.float32)
    edge[:, 16:48, 16:48] = 1.0
    clean = simulate(edge, partial_fourier=0.625, partial_fourier_axis=-2).clean
    assert clean[:, 32, 15].max() < 1e-4  # the edge across x stays a step
    assert clean[:, 15, 32].min() > 0.1  # the edge across y spreads out


def test_3d_acquisition_correlates_slices_and_2d_multislice_keeps_them_independent():
    image = np.ones((32, 32, 32), np.float32)
    three_d = simulate(image, acquired=(0.5, 1.0, 1.0), acquisition="3d").noise
    two_d = simulate(image, acquired=(0.5, 1.0, 1.0), acquisition="2d").noise
    assert correlation(three_d, 0) == pytest.approx(dirichlet(16, 32), abs=0.03)
    assert abs(correlation(two_d, 0)) < 0.03
    assert two_d.std() == pytest.approx(SIGMA, rel=0.03)  # the through-plane fraction does not apply


def test_coil_combination_is_non_central_chi_and_noisier_far_from_the_coils():
    coils = 4
    sens = coil_sensitivities((64, 64), coils)
    combined = np.sqrt((sens**2).sum(axis=0))
    assert (combined**2).mean() == pytest.approx(1.0, rel=1e-4)
    # Background: root-sum-of-squares of 2·coils Gaussian channels, a chi distribution, scaled by 1/combined.
    background = simulate(np.zeros((16, 64, 64), np.float32), coils=coils).noisy * combined
    chi_mean = SIGMA * math.sqrt(2) * math.gamma(coils + 0.5) / math.gamma(coils)
    assert background.mean() == pytest.approx(chi_mean, rel=0.02)
    # Strong signal: Gaussian noise of SD σ/combined, largest at the centre, far from every coil.
    result = MRKSpaceNoise(SIGMA, coils=coils).simulate(np.ones((24, 64, 64), np.float32), np.random.default_rng(1))
    expected = MRKSpaceNoise(SIGMA, coils=coils).expected_sd((24, 64, 64))
    centre, near_coil = (slice(None), slice(28, 36), slice(28, 36)), (slice(None), slice(28, 36), slice(56, 64))
    assert result.noise[centre].std() == pytest.approx(expected[centre[1:]].mean(), rel=0.08)
    assert result.noise[near_coil].std() == pytest.approx(expected[near_coil[1:]].mean(), rel=0.08)
    assert expected[centre[1:]].mean() > 1.5 * expected[near_coil[1:]].mean()
    np.testing.assert_allclose(result.clean, 1.0, atol=1e-5)  # the combination keeps the signal uniform


def test_without_noise_the_acquisition_is_the_target_and_keeps_the_mean():
    rng = np.random.default_rng(2)
    image = np.zeros((8, 40, 40), np.float32)
    image[:, 10:30, 12:28] = rng.uniform(0.5, 1.0)
    model = MRKSpaceNoise(0.0, acquired=(0.8, 0.5, 0.6), coils=4)
    result = model.simulate(image, np.random.default_rng(0))
    np.testing.assert_allclose(result.noisy, result.clean, rtol=1e-5, atol=1e-6)
    assert result.sigma < 1e-6
    assert not np.allclose(result.clean, image, atol=0.05)  # the resolution loss stays in the target
    assert result.clean[:, 18:22, 18:22].mean() == pytest.approx(image[:, 18:22, 18:22].mean(), rel=0.05)


def test_2d_images_same_seed_same_noise():
    image = np.ones((40, 36), np.float32)
    model = MRKSpaceNoise(SIGMA, acquired=(0.6, 0.8))
    a = model.simulate(image, np.random.default_rng(3)).noisy
    assert a.shape == (40, 36)
    assert np.array_equal(a, model(image, np.random.default_rng(3)))
    assert not np.array_equal(a, model(image, np.random.default_rng(4)))


@pytest.mark.parametrize("params, message", [
    ({"sigma": -1.0}, "sigma must be"), ({"sigma": 0.1, "acquired": (1.0, 0.0, 1.0)}, "acquired must hold"),
    ({"sigma": 0.1, "partial_fourier": 0.3}, r"partial_fourier must be in \[0.5, 1\]"),
    ({"sigma": 0.1, "coils": 0}, "coils must be"),
    ({"sigma": 0.1, "acquisition": "spiral"}, "acquisition must be one of 3d, 2d"),
])
def test_bad_parameters_name_the_rule(params, message):
    with pytest.raises(ValueError, match=message):
        MRKSpaceNoise(**params)
