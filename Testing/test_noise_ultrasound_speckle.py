"""Ultrasound speckle: Rayleigh envelope, 5.57 dB log-speckle whatever the echogenicity, grain set by the PSF
(intensity correlation exp(−d²/2σ²)), partially developed speckle, frames versus volumes, the clean target."""
from __future__ import annotations

import math

import numpy as np
import pytest

from MedicalDenoiseLib.noise.ultrasound_speckle import LOG_SPECKLE_MEAN_DB, UltrasoundSpeckle, speckle_envelope

RAYLEIGH_MEAN_OVER_SD = math.sqrt(math.pi / (4 - math.pi))  # 1.91
LOG_SPECKLE_SD_DB = 10.0 / math.log(10.0) * math.pi / math.sqrt(6.0)  # 5.57 dB: SD of 10·log10(exponential)


def lag_correlation(values: np.ndarray, axis: int, lag: int) -> float:
    a = values - values.mean()
    return float(np.mean(a * np.roll(a, lag, axis=axis)) / a.var())


def test_fully_developed_envelope_is_rayleigh_with_the_echogenicity_as_rms():
    envelope = speckle_envelope(np.full((8, 64, 64), 0.3, np.float32), np.random.default_rng(0), (0.0, 1.0, 2.0))
    assert envelope.mean() / envelope.std() == pytest.approx(RAYLEIGH_MEAN_OVER_SD, rel=0.03)
    assert np.sqrt(np.mean(envelope**2)) == pytest.approx(0.3, rel=0.02)


def test_grain_follows_the_point_spread_function():
    # Complex Gaussian field blurred by a Gaussian of SD σ: intensity correlation |ρ|² = exp(−d²/2σ²).
    axial, lateral = 1.0, 2.0
    amplitude = np.ones((12, 64, 64), np.float32)
    intensity = speckle_envelope(amplitude, np.random.default_rng(1), (0.0, axial, lateral)) ** 2
    for axis, sd in ((1, axial), (2, lateral)):
        for lag in (1, 2):
            assert lag_correlation(intensity, axis, lag) == pytest.approx(math.exp(-lag**2 / (2 * sd**2)), abs=0.04)
    assert abs(lag_correlation(intensity, 0, 1)) < 0.03  # no blur across frames: independent


def test_few_scatterers_give_spikier_than_rayleigh_speckle():
    amplitude = np.ones((8, 64, 64), np.float32)
    sparse = speckle_envelope(amplitude, np.random.default_rng(2), (0.0, 1.0, 1.5), scatterers_per_cell=0.5)
    dense = speckle_envelope(amplitude, np.random.default_rng(2), (0.0, 1.0, 1.5), scatterers_per_cell=100.0)
    assert dense.mean() / dense.std() == pytest.approx(RAYLEIGH_MEAN_OVER_SD, rel=0.05)
    assert sparse.mean() / sparse.std() < 0.85 * RAYLEIGH_MEAN_OVER_SD
    assert np.mean(sparse**2) == pytest.approx(1.0, rel=0.1)  # the mean power is the echogenicity either way


def test_log_compressed_speckle_is_additive_with_an_sd_of_5_57_db():
    image = np.full((8, 64, 64), 0.05, np.float32)
    image[:, :, 32:] = 0.3  # 15.6 dB brighter
    model = UltrasoundSpeckle(dynamic_range_db=60.0)
    result = model.simulate(image, np.random.default_rng(3))
    for region in (np.s_[:, :, 4:28], np.s_[:, :, 36:60]):
        noise = result.noise[region]
        assert noise.std() == pytest.approx(LOG_SPECKLE_SD_DB / 60.0, rel=0.05)
        assert abs(noise.mean()) < 0.05 * noise.std()  # the clean target sits at speckle's mean log level
    expected_step = 20 * math.log10(0.3 / 0.05) / 60.0
    assert result.clean[:, :, 48].mean() - result.clean[:, :, 16].mean() == pytest.approx(expected_step, rel=1e-3)


def test_clean_target_is_speckle_free_and_clipped_like_the_display():
    image = np.zeros((4, 48, 48), np.float32)
    image[:, 12:36, 12:36] = 0.2
    model = UltrasoundSpeckle(dynamic_range_db=50.0, display_range=(0.0, 255.0))
    result = model.simulate(image, np.random.default_rng(4))
    inside = result.clean[:, 18:30, 18:30]
    level = 255.0 * (1 + (20 * math.log10(0.2) + LOG_SPECKLE_MEAN_DB) / 50.0)
    np.testing.assert_allclose(inside, level, rtol=1e-4)
    assert result.noisy.min() >= 0.0 and result.noisy.max() <= 255.0
    assert np.all(result.clean[:, :4, :4] == 0.0)  # no echo: the bottom of the display


def test_a_log_compressed_input_is_its_own_target_where_flat():
    display = np.full((4, 40, 40), 0.6, np.float32)
    model = UltrasoundSpeckle(dynamic_range_db=55.0, input_log_compressed=True)
    result = model.simulate(display, np.random.default_rng(5))
    np.testing.assert_allclose(result.clean, 0.6, atol=1e-5)
    assert result.noise.std() == pytest.approx(LOG_SPECKLE_SD_DB / 55.0, rel=0.06)


def test_volumes_blur_through_the_frame_and_frame_sequences_do_not():
    image = np.full((24, 40, 40), 0.1, np.float32)
    volume = UltrasoundSpeckle(elevational_psf=None, lateral_psf=2.0).simulate(image, np.random.default_rng(6)).noise
    frames = UltrasoundSpeckle(elevational_psf=0.0).simulate(image, np.random.default_rng(6)).noise
    assert lag_correlation(volume, 0, 1) > 0.6
    assert abs(lag_correlation(frames, 0, 1)) < 0.03
    frame = UltrasoundSpeckle(axial_axis=-1).simulate(image[0], np.random.default_rng(7)).noise
    assert lag_correlation(frame, 1, 1) < lag_correlation(frame, 0, 1)  # axial (x here) grain is the shorter


def test_same_seed_same_speckle():
    image = np.full((20, 30), 0.2, np.float32)
    model = UltrasoundSpeckle()
    assert np.array_equal(model(image, np.random.default_rng(8)), model(image, np.random.default_rng(8)))
    assert not np.array_equal(model(image, np.random.default_rng(8)), model(image, np.random.default_rng(9)))


@pytest.mark.parametrize("params, message", [
    ({"axial_psf": 0.0}, "axial_psf must be"), ({"dynamic_range_db": -3.0}, "dynamic_range_db must be"),
    ({"scatterers_per_cell": 0.0}, "scatterers_per_cell must be"),
    ({"display_range": (1.0, 0.0)}, "display_range must be"),
    ({"axial_axis": 0}, "axial_axis must be -2 or -1"),
])
def test_bad_parameters_name_the_rule(params, message):
    with pytest.raises(ValueError, match=message):
        UltrasoundSpeckle(**params)
