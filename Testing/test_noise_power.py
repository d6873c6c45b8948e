"""``evaluation.noise_power``: PSD convention, radial NPS level and shape, flat squares, on seeded noise."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedicalDenoiseLib.evaluation.noise_power import (extract_rois, flat_rois, mean_frequency, peak_frequency,
                                                      power_spectrum, radial_nps)


def test_power_spectrum_of_white_noise_is_n_sigma_squared_everywhere():
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 0.5, (64, 6, 8, 10))
    psd = power_spectrum(samples)
    assert psd.shape == (6, 8, 10)
    assert psd.mean() == pytest.approx(480 * 0.25, rel=0.03)
    assert psd.std() / psd.mean() < 0.2  # flat: each bin averages 64 draws (SD 1/8)


def test_radial_nps_of_white_noise_is_flat_at_sigma_squared_times_pixel_area():
    rng = np.random.default_rng(1)
    rois = rng.normal(0, 10.0, (200, 32, 32))
    frequencies, nps = radial_nps(rois, pixel_size_mm=0.5)
    assert frequencies[1] == pytest.approx(1 / (32 * 0.5))
    assert frequencies[-1] == pytest.approx(1.0)  # Nyquist of 0.5 mm pixels
    assert np.median(nps[2:]) == pytest.approx(100 * 0.25, rel=0.05)


def test_radial_nps_integrates_to_the_variance():
    rng = np.random.default_rng(2)
    rois = ndimage.gaussian_filter(rng.normal(0, 1, (100, 32, 32)), (0, 1, 1), mode="wrap")
    pixel = 0.8
    frequencies, nps = radial_nps(rois, pixel)
    df = frequencies[1]
    # Rings are one frequency step wide: area 2π f df (the centre disc π (df/2)²); corners past Nyquist
    # hold almost nothing for this smooth noise.
    area = np.where(frequencies > 0, 2 * np.pi * frequencies * df, np.pi * (df / 2) ** 2)
    assert float((nps * area).sum()) == pytest.approx(float(rois.var(axis=(1, 2)).mean()), rel=0.1)


def test_smoothing_moves_the_power_to_low_frequencies_and_a_high_pass_to_high_ones():
    rng = np.random.default_rng(3)
    white = rng.normal(0, 1, (100, 32, 32))
    smooth = ndimage.gaussian_filter(white, (0, 1.5, 1.5), mode="wrap")
    sharp = white - ndimage.gaussian_filter(white, (0, 1.0, 1.0), mode="wrap")
    f, nps_white = radial_nps(white)
    _, nps_smooth = radial_nps(smooth)
    _, nps_sharp = radial_nps(sharp)
    assert mean_frequency(f, nps_smooth) < 0.6 * mean_frequency(f, nps_white)
    assert mean_frequency(f, nps_sharp) > mean_frequency(f, nps_white)
    assert peak_frequency(f, nps_smooth) < 0.15 < peak_frequency(f, nps_sharp)


def test_a_ramp_is_fitted_away_and_not_counted_as_noise():
    y, x = np.mgrid[:16, :16]
    rois = np.stack([3.0 * y - 2.0 * x + 100.0] * 4)
    _, nps = radial_nps(rois)
    assert np.abs(nps).max() < 1e-12


def test_flat_rois_are_chosen_in_the_flat_tissue_inside_the_foreground():
    rng = np.random.default_rng(4)
    image = rng.normal(0, 1.0, (2, 64, 64))
    image[:, :, 32:] += 20 * np.sin(np.arange(32) / 2.0)  # structure on the right half
    foreground = np.ones(image.shape, bool)
    foreground[:, :8] = False  # the top rows are outside
    corners = flat_rois(image, foreground, 16, 6)
    assert len(corners) == 6
    assert all(x + 16 <= 32 and y >= 8 for _, y, x in corners)
    assert extract_rois(image, corners, 16).shape == (6, 16, 16)
    assert flat_rois(image, np.zeros(image.shape, bool), 16, 6) == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="N, N"):
        radial_nps(np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="pixel_size_mm"):
        radial_nps(np.zeros((2, 8, 8)), 0.0)
    with pytest.raises(ValueError, match="realisations"):
        power_spectrum(np.zeros(5))
    with pytest.raises(ValueError, match="size"):
        flat_rois(np.zeros((8, 8)), np.ones((8, 8), bool), 2, 1)
