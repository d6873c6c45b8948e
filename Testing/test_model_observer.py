"""``evaluation.model_observer``: Laguerre–Gauss channels, the AUC, and the CHO against the ideal observer."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from MedicalDenoiseLib.evaluation.model_observer import (auc, channel_outputs, cho_detectability,
                                                         laguerre_gauss_channels)


def test_laguerre_gauss_channels_are_orthonormal_and_centred():
    channels = laguerre_gauss_channels(64, 10.0, 5)
    gram = channels.reshape(5, -1) @ channels.reshape(5, -1).T
    np.testing.assert_allclose(gram, np.eye(5), atol=0.02)
    assert np.unravel_index(np.argmax(channels[0]), (64, 64)) in {(31, 31), (31, 32), (32, 31), (32, 32)}
    moved = laguerre_gauss_channels(32, 6.0, 1, centre=(10.0, 20.0))
    assert np.unravel_index(np.argmax(moved[0]), (32, 32)) == (10, 20)


def test_auc_counts_pairs_and_halves_ties():
    assert auc(np.array([2.0, 3.0]), np.array([1.0])) == 1.0
    assert auc(np.array([1.0]), np.array([2.0, 3.0])) == 0.0
    assert auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


def _images(rng: np.random.Generator, count: int, amplitude: float, size: int = 24, sigma: float = 1.0):
    """White-noise images with and without a Gaussian blob of the first LG channel's shape (width 6)."""
    blob = laguerre_gauss_channels(size, 6.0, 1)[0]
    blob /= np.linalg.norm(blob)
    present = rng.normal(0, sigma, (count, size, size)) + amplitude * blob
    absent = rng.normal(0, sigma, (count, size, size))
    return present, absent


def test_cho_matches_the_ideal_observer_on_white_noise():
    # For a known signal s in white noise σ the ideal observer's d' = |s| / σ and AUC = Φ(d' / √2); the
    # LG channels hold this blob exactly, so the CHO reaches it up to sampling.
    rng = np.random.default_rng(0)
    present, absent = _images(rng, 300, amplitude=1.5)
    channels = laguerre_gauss_channels(24, 6.0, 4)
    result = cho_detectability(channel_outputs(present, channels), channel_outputs(absent, channels),
                               np.random.default_rng(1), resamples=200)
    expected = norm.cdf(1.5 / np.sqrt(2))
    assert result.auc == pytest.approx(expected, abs=0.04)
    assert result.low < result.auc < result.high
    assert result.low < expected < result.high


def test_no_signal_gives_chance_and_a_stronger_signal_a_higher_auc():
    channels = laguerre_gauss_channels(24, 6.0, 4)
    aucs = []
    for amplitude in (0.0, 1.0, 3.0):
        present, absent = _images(np.random.default_rng(2), 200, amplitude)
        aucs.append(cho_detectability(channel_outputs(present, channels), channel_outputs(absent, channels),
                                      np.random.default_rng(3), resamples=100))
    assert aucs[0].low < 0.5 < aucs[0].high
    assert aucs[0].auc < aucs[1].auc < aucs[2].auc
    assert aucs[2].auc > 0.95


def test_too_few_images_or_mismatched_channels_are_refused():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="at least"):
        cho_detectability(rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng)
    with pytest.raises(ValueError, match="resamples"):
        cho_detectability(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), rng, resamples=0)
    with pytest.raises(ValueError, match="one J"):
        cho_detectability(rng.normal(size=(40, 4)), rng.normal(size=(40, 3)), rng)
    with pytest.raises(ValueError, match="images must be"):
        channel_outputs(np.zeros((3, 8, 8)), laguerre_gauss_channels(10, 3.0, 2))
