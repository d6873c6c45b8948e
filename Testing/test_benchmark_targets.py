"""The lesion, residual and texture measures of ``benchmarks/targets.py``: the numbers the targets are judged on."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark_support import load_script


@pytest.fixture(scope="module")
def targets():
    return load_script("targets")


def test_ball_of_radius_two_has_33_voxels(targets):
    offsets = targets.ball_offsets(2.0)
    assert len(offsets) == 33
    assert np.all((offsets**2).sum(1) <= 4)


def test_lesions_are_inside_the_foreground_and_apart(targets):
    foreground = np.zeros((40, 40, 40), bool)
    foreground[5:35, 5:35, 5:20] = True
    centres = targets.place_lesions(foreground, 50, 2.0, np.random.default_rng(0), spacing=8.0)
    assert 1 < len(centres) < 50  # the region cannot hold 50 lesions 8 voxels apart
    assert foreground[tuple(centres.T)].all()
    distances = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
    assert distances[~np.eye(len(centres), dtype=bool)].min() >= 8.0


def test_no_room_for_lesions_is_an_error(targets):
    with pytest.raises(ValueError, match="no room"):
        targets.place_lesions(np.zeros((30, 30, 30), bool), 3, 2.0, np.random.default_rng(0))


def test_lesion_score_of_identity_and_of_a_halving_denoiser(targets):
    rng = np.random.default_rng(1)
    clean = rng.uniform(0.2, 0.8, (40, 40, 40)).astype(np.float32)
    centres = np.array([[20, 20, 20], [12, 28, 12]])
    lesions, shells = targets.lesion_masks(clean.shape, centres, 2.0)
    assert lesions.sum() == 66 and not (lesions & shells).any()
    lesion_map = np.where(lesions, np.float32(0.08), np.float32(0))
    noise = rng.normal(0, 0.05, clean.shape).astype(np.float32)
    noisy = clean + noise
    # Doing nothing keeps everything and gains nothing.
    kept, gain = targets.lesion_score(clean, lesion_map, lesions, shells, noisy, noisy + lesion_map, noisy)
    assert kept == pytest.approx(1.0) and gain == pytest.approx(1.0)
    # Half the lesion and a quarter of the noise: amplitude 50 %, CNR x2.
    kept, gain = targets.lesion_score(clean, lesion_map, lesions, shells, noisy,
                                      clean + noise / 4 + lesion_map / 2, clean + noise / 4)
    assert kept == pytest.approx(0.5) and gain == pytest.approx(2.0)


def test_flat_mask_picks_the_flat_side(targets):
    clean = np.zeros((32, 32, 32), np.float32)
    clean[:, :, 16:] = np.linspace(0, 1, 16)[None, None, :] * np.sin(np.arange(32))[:, None, None]
    flat = targets.flat_mask(clean, np.ones(clean.shape, bool), share=0.2)
    assert flat[:, :, :12].sum() > 0.9 * flat.sum()
