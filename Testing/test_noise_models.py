from __future__ import annotations

import numpy as np
import pytest

from MedicalDenoiseLib.noise.image_domain import (
    CTQuantumNoise, GaussianNoise, RandomNoise, RicianNoise, SpeckleNoise, make_noise,
)


def _autocorrelation(noise: np.ndarray, axis: int) -> float:
    a = noise - noise.mean()
    b = np.roll(a, 1, axis=axis)
    return float((a * b).mean() / a.var())


def test_gaussian_noise_has_requested_sd_and_is_white():
    image = np.zeros((32, 40, 40), np.float32)
    noisy = GaussianNoise(0.1)(image, np.random.default_rng(0))
    assert noisy.std() == pytest.approx(0.1, rel=0.02)
    assert abs(noisy.mean()) < 0.002
    assert abs(_autocorrelation(noisy, 2)) < 0.02


def test_same_seed_same_noise_other_seed_other_noise():
    image = np.ones((8, 9, 10), np.float32)
    model = GaussianNoise(0.2)
    a = model(image, np.random.default_rng(3))
    b = model(image, np.random.default_rng(3))
    c = model(image, np.random.default_rng(4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rician_noise_biases_dark_regions_up_like_a_rayleigh_distribution():
    sigma = 0.1
    dark = RicianNoise(sigma)(np.zeros((30, 30, 30), np.float32), np.random.default_rng(0))
    assert dark.min() >= 0
    assert dark.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    bright = RicianNoise(sigma)(np.full((30, 30, 30), 5.0, np.float32), np.random.default_rng(0))
    assert bright.mean() == pytest.approx(5.0, abs=0.01)
    assert bright.std() == pytest.approx(sigma, rel=0.03)


def test_ct_noise_is_correlated_in_plane_but_not_across_slices():
    image = np.zeros((24, 64, 64), np.float32)
    noisy = CTQuantumNoise(20.0, cutoff=0.3)(image, np.random.default_rng(0))
    assert noisy.std() == pytest.approx(20.0, rel=0.02)
    # The ramp filter removes low frequencies: neighbours are anti-correlated or correlated, never white.
    assert abs(_autocorrelation(noisy, 2)) > 0.1
    assert abs(_autocorrelation(noisy, 0)) < 0.03


def test_ct_noise_can_grow_with_density():
    image = np.zeros((8, 64, 64), np.float32)
    image[:, :, 32:] = 1000.0
    noisy = CTQuantumNoise(10.0, attenuation_gain=1.0, reference=0.0, scale=1000.0)(image, np.random.default_rng(0))
    residual = noisy - image
    assert residual[:, :, 36:60].std() > 1.6 * residual[:, :, 4:28].std()


def test_speckle_is_multiplicative():
    image = np.concatenate([np.full((8, 32, 16), 1.0), np.full((8, 32, 16), 4.0)], axis=2).astype(np.float32)
    noisy = SpeckleNoise(0.2)(image, np.random.default_rng(0))
    low, high = (noisy - image)[:, :, 2:14], (noisy - image)[:, :, 18:30]
    assert high.std() == pytest.approx(4 * low.std(), rel=0.15)
    assert np.all(SpeckleNoise(0.2)(np.zeros_like(image), np.random.default_rng(0)) == 0)


def test_random_noise_draws_levels_inside_the_range_and_is_seedable():
    noise = RandomNoise(kinds=("gaussian", "rician", "ct"), sigma_range=(0.01, 0.1))
    image = np.full((8, 16, 16), 0.5, np.float32)
    draws = [noise(image, np.random.default_rng(s))[1] for s in range(50)]
    assert all(0.01 <= d <= 0.1 for d in draws)
    assert noise(image, np.random.default_rng(7))[0].tolist() == noise(image, np.random.default_rng(7))[0].tolist()


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_sigma_is_refused(bad):
    with pytest.raises(ValueError, match="sigma must be"):
        GaussianNoise(bad)(np.zeros((2, 2, 2)), np.random.default_rng(0))


def test_unknown_noise_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="gaussian, rician, ct, speckle"):
        make_noise("poisson", 0.1)
