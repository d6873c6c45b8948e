from __future__ import annotations

import numpy as np
import pytest
import torch

from MedicalDenoiseLib.errors import Cancelled
from MedicalDenoiseLib.inference.tiling import sliding_window_inference, tile_starts


def test_identity_model_is_reproduced_exactly_for_odd_sizes():
    volume = np.random.default_rng(0).normal(size=(37, 50, 23)).astype(np.float32)
    out = sliding_window_inference(volume, lambda t: t, tile_size=16, overlap=4, size_multiple=4)
    assert out.shape == volume.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, volume, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 9, 9), (1, 1, 1)])
def test_volumes_smaller_than_a_tile_or_the_network_factor(shape):
    volume = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    seen = []

    def predictor(tile):
        seen.append(tuple(tile.shape[2:]))
        return tile * 2

    out = sliding_window_inference(volume, predictor, tile_size=32, overlap=4, size_multiple=4)
    np.testing.assert_allclose(out, volume * 2, rtol=1e-6)
    assert all(n % 4 == 0 for n in seen[0])


def test_tiled_equals_whole_volume_away_from_borders_for_a_local_model():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 1, 3, padding=1))
    volume = np.random.default_rng(1).normal(size=(40, 44, 36)).astype(np.float32)

    def predictor(tile):
        with torch.no_grad():
            return conv(tile)

    whole = predictor(torch.from_numpy(volume)[None, None])[0, 0].numpy()
    tiled = sliding_window_inference(volume, predictor, tile_size=20, overlap=8)
    # The receptive field is 5 voxels, so each tile is wrong within 2 voxels of its edge; the blending
    # weight there is tiny, so away from the volume's own border tiled and whole agree closely.
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=5e-3)
    assert np.mean(np.abs(tiled[inner] - whole[inner])) < 5e-4


def test_tiled_equals_whole_volume_exactly_for_a_pointwise_model():
    volume = np.random.default_rng(2).normal(size=(33, 41, 29)).astype(np.float32)
    out = sliding_window_inference(volume, lambda t: torch.tanh(3 * t) + t**2, tile_size=16, overlap=6)
    np.testing.assert_allclose(out, np.tanh(3 * volume) + volume**2, rtol=1e-5, atol=1e-6)


def test_tile_starts_cover_the_axis_with_even_tiles():
    for length, tile, overlap in [(256, 160, 16), (300, 96, 16), (97, 32, 8), (20, 32, 4)]:
        size, starts = tile_starts(length, tile, overlap)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + size] = True
        assert covered.all() and size <= max(tile, length)
        assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))
    assert tile_starts(256, 160, 16)[0] == 136


def test_progress_reaches_one_and_cancel_stops_before_the_next_tile():
    volume = np.zeros((32, 32, 32), np.float32)
    fractions = []
    sliding_window_inference(volume, lambda t: t, tile_size=16, overlap=4, progress=fractions.append)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    calls = []

    def predictor(tile):
        calls.append(1)
        return tile

    with pytest.raises(Cancelled):
        sliding_window_inference(volume, predictor, tile_size=16, overlap=4, cancel=lambda: len(calls) >= 2)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tile_size": 8, "overlap": 8}, "overlap must be in"),
        ({"tile_size": 2, "size_multiple": 4}, "tile_size must be >= 4"),
        ({"blending": "linear"}, "blending must be one of gaussian, constant"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_inference(np.zeros((8, 8, 8), np.float32), lambda t: t, **kwargs)
    with pytest.raises(ValueError, match="must be 3D"):
        sliding_window_inference(np.zeros((8, 8), np.float32), lambda t: t)
