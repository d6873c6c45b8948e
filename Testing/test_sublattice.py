"""Sub-lattices: an exact round trip, one batch per tile, the grid between sub-lattices removed, and the
Denoiser's sub-lattice path keeping its contracts (geometry, cancel, monotone progress, what it tells the user)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import phantom
from MedicalDenoiseLib.errors import Cancelled
from MedicalDenoiseLib.evaluation.seams import seam_score
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.sublattice import agree, merge, offsets, split
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.models.model_files import load_model


@pytest.mark.parametrize("shape, strides", [((7, 33, 18), (1, 2, 2)), ((9, 20, 21), (2, 3, 4)), ((1, 5, 3), (1, 4, 4)),
                                            ((4, 12, 12), (2, 2, 3))])
def test_split_and_merge_round_trip_exactly(shape, strides):
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    parts = split(volume, strides)
    assert parts.shape[0] == np.prod(strides)
    assert np.array_equal(merge(parts, strides, shape), volume)
    if all(n % k == 0 for n, k in zip(shape, strides)):
        for part, (z, y, x) in zip(parts, offsets(strides)):
            assert np.array_equal(part, volume[z::strides[0], y::strides[1], x::strides[2]])


def test_split_refuses_bad_strides():
    with pytest.raises(ValueError, match="strides"):
        split(np.zeros((4, 4, 4), np.float32), (0, 2, 2))


def test_agreement_removes_a_grid_between_sub_lattices_and_keeps_a_shared_removal():
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (4, 128, 128)).astype(np.float32)
    shared = 0.2 * np.ones_like(image)  # what every sub-lattice removed alike
    parts = split(image - shared, (1, 2, 2))
    parts += rng.normal(0, 0.5, (4, 1, 1, 1)).astype(np.float32)  # each sub-lattice's own offset: a grid
    grid = merge(parts, (1, 2, 2), image.shape)
    assert seam_score(grid) > 10 * seam_score(image)
    fixed = agree(grid, image, (1, 2, 2))
    assert seam_score(fixed) == pytest.approx(seam_score(image), rel=0.05)
    assert np.std(fixed - image) < 0.1 * np.std(grid - image)  # the offsets are shared: nearly one constant removal
    np.testing.assert_allclose(agree(image - shared, image, (1, 2, 2)), image - shared, atol=1e-5)


def test_agreement_a_few_slices_at_a_time_equals_the_whole_volume_at_once(monkeypatch):
    from MedicalDenoiseLib.inference import sublattice

    rng = np.random.default_rng(4)
    image = rng.normal(size=(40, 48, 48)).astype(np.float32)
    output = image - 0.3 * rng.normal(size=image.shape).astype(np.float32)
    chunked = agree(output, image, (1, 2, 2))
    monkeypatch.setattr(sublattice, "_CHUNK", 1000)
    np.testing.assert_allclose(chunked, agree(output, image, (1, 2, 2)), atol=1e-6)


def _grainy(shape=(12, 64, 64), seed=0) -> np.ndarray:
    """A phantom with noise zero-filled to half of k-space in-plane (lag-1 correlation about 0.6)."""
    from MedicalDenoiseLib.noise import noise_kind

    clean = phantom(shape, seed=seed) * 1000
    return noise_kind("mr-kspace").fixed(sigma=40.0, acquired=(1.0, 0.5, 0.5)).simulate(
        clean, np.random.default_rng(seed)).noisy


class _Identity(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.batches = []

    def forward(self, x, sigma=None):
        self.batches.append(x.shape[0])
        return x.clone()


def test_identity_network_on_sub_lattices_returns_the_input_exactly(tiny_model_file):
    model = load_model(tiny_model_file)
    identity = _Identity(model.network.config)
    model.network = identity
    volume = Volume(_grainy((40, 64, 64)), Geometry((2.0, 0.5, 0.5), (3.0, -4.0, 5.0), tuple(np.eye(3).ravel())),
                    modality="mr")  # over 16 slices: the volumetric layout, which runs the network as given
    result = Denoiser(model, device="cpu", refine=False).denoise(volume)
    assert result.grain.strides == (1, 2, 2)
    assert set(identity.batches) == {4}  # the four sub-lattices of a tile run as one batch
    np.testing.assert_allclose(result.volume.array, volume.array, rtol=1e-5, atol=1e-3)
    assert result.volume.geometry == volume.geometry


def test_sub_lattice_path_cancels_and_reports_monotone_progress(tiny_model_file):
    volume = Volume(_grainy((20, 96, 96)), Geometry((1.0, 1.0, 1.0), (0, 0, 0), tuple(np.eye(3).ravel())), modality="mr")
    seen = []
    result = Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32).denoise(volume, grain="2", progress=seen.append)
    assert result.grain.strides == (1, 2, 2) and result.grain.chosen_by == "user"
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) > 1
    with pytest.raises(Cancelled):
        Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32).denoise(volume, grain="2", cancel=lambda: True)


def test_whole_grain_is_the_path_for_white_noise(tiny_model_file):
    rng = np.random.default_rng(3)
    volume = Volume((phantom((12, 64, 64)) * 1000 + rng.normal(0, 30, (12, 64, 64))).astype(np.float32),
                    Geometry((1.0, 1.0, 1.0), (0, 0, 0), tuple(np.eye(3).ravel())), modality="mr")
    denoiser = Denoiser(load_model(tiny_model_file), device="cpu")
    auto = denoiser.denoise(volume)
    assert auto.grain.whole
    np.testing.assert_array_equal(auto.volume.array, denoiser.denoise(volume, grain="1").volume.array)


def test_ct_padding_and_nan_survive_the_sub_lattice_path(tiny_model_file):
    array = _grainy((8, 64, 64)) - 1000.0
    array[:, :, :6] = -3024.0  # out-of-field padding
    array[2, 10, 10] = np.nan
    volume = Volume(array.astype(np.float32), Geometry((1.0, 1.0, 1.0), (0, 0, 0), tuple(np.eye(3).ravel())), modality="ct")
    result = Denoiser(load_model(tiny_model_file), device="cpu").denoise(volume, grain="2")
    out = result.volume.array
    assert np.all(out[:, :, :6] == -3024.0) and np.isfinite(out).all()
    assert any("NaN" in m for m in result.messages)
