"""Sub-lattice twins: a network fine-tuned on the sub-lattices of patches with scanner grain, trained from
``data.sublattice`` batches, registered beside its model and run wherever the denoiser splits an image."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from MedicalDenoiseLib.errors import ModelFileError
from MedicalDenoiseLib.estimation.noise_estimation import estimate_noise_sigma
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.sublattice import split
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.models.model_files import ModelCard, file_sha256, save_model
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.models.registry import open_model
from MedicalDenoiseLib.models.twins import trained_strides, twin_kind
from training.batches import BatchMaker
from training.conditioning import run_conditioning
from training.config import config_from_dict
from training.errors import ConfigError
from training.register import register
from training.volumes import TrainingVolume
from conftest import phantom


def _volume(shape=(12, 48, 48)):
    image = phantom(shape)
    foreground = np.argwhere(np.ones(shape, bool)).astype(np.int32)
    return TrainingVolume("a", "mr", image, None, foreground, (1.0, 1.0, 1.0))


def _config(**data):
    return config_from_dict({"data": {"batch_size": 2, **data},
                             "noise": {"sigma_range": [0.05, 0.05], "kinds": {"mr": ["mr-kspace"]}}})


def test_batches_are_the_sub_lattices_of_patches_made_noisy_at_full_resolution():
    config = _config(patch_size=[8, 8, 8], sublattice=[1, 2, 2])
    plain = _config(patch_size=[8, 16, 16])
    twin_batch = BatchMaker("synthetic", [_volume()], config, (4, 4, 4), "noise-sd")(np.random.default_rng(3))
    # The same draws at full resolution: the twin's batch is exactly their sub-lattices, in order.
    full = BatchMaker("synthetic", [_volume()], plain, (4, 8, 8), "noise-sd")(np.random.default_rng(3))
    assert twin_batch.noisy.shape == (8, 8, 8, 8)
    np.testing.assert_array_equal(twin_batch.noisy, np.concatenate([split(p, (1, 2, 2)) for p in full.noisy]))
    np.testing.assert_array_equal(twin_batch.clean, np.concatenate([split(p, (1, 2, 2)) for p in full.clean]))
    # Each sub-lattice is told the level measured on its whole patch, as the denoiser tells it the whole image's.
    assert np.allclose(twin_batch.levels, np.repeat([estimate_noise_sigma(p) for p in full.noisy], 4))
    assert np.allclose(twin_batch.sigma, np.repeat(full.sigma, 4))


def test_sub_lattice_runs_are_told_the_full_noise_sd_whatever_they_started_from():
    assert run_conditioning(True, "fine-scale-sd", (1, 2, 2)) == "noise-sd"
    assert run_conditioning(True, "fine-scale-sd", (1, 1, 1)) == "fine-scale-sd"
    assert run_conditioning(False, "fine-scale-sd", (1, 2, 2)) is None


@pytest.mark.parametrize("data, mode, needle", [
    ({"sublattice": [1, 2, 5]}, "synthetic", r"data.sublattice must be strides of 1-4, got \[1, 2, 5\]"),
    ({"sublattice": [1, 2]}, "synthetic", r"data.sublattice must be 3 integer\(s\) >= 1"),
    ({"sublattice": [1, 2, 2]}, "self-supervised", "needs a clean target: not with mode self-supervised or noise.noisier2noise, got mode 'self-supervised'"),
])
def test_bad_sub_lattice_settings_are_refused(data, mode, needle):
    with pytest.raises(ConfigError, match=needle):
        config_from_dict({"mode": mode, "data": data})


def _network(seed):
    torch.manual_seed(seed)
    return build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1), noise_level_input=True)).eval()


def _card(name, net, strides):
    return ModelCard(name=name, description="test", network=net.config, noise_range=(0.005, 0.15),
                     training={"config": {"data": {"sublattice": list(strides)}}}, conditioning="noise-sd")


def _registry(tmp_path, monkeypatch, twin_strides=(1, 2, 2)):
    models = tmp_path / "Models"
    models.mkdir()
    nets = {"vol": _network(1), "vol-sublattice": _network(2)}
    sha = {}
    for name, net in nets.items():
        path = models / f"{name}.safetensors"
        save_model(path, net, _card(name, net, twin_strides if name != "vol" else (1, 1, 1)))
        sha[name] = file_sha256(path)
    registry = {"default": "vol", "models": [{"name": "vol", "file": "Models/vol.safetensors", "sha256": sha["vol"],
                                              "summary": "test"}]}
    (tmp_path / "Models.json").write_text(json.dumps(registry))
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(tmp_path))
    return models / "vol-sublattice.safetensors"


def test_the_twin_kind_is_read_from_the_card():
    net = _network(0)
    assert twin_kind(_card("s", net, (1, 2, 2))) == "sublattice" and trained_strides(_card("s", net, (1, 2, 2))) == (1, 2, 2)
    assert twin_kind(_card("w", net, (1, 1, 1))) is None
    assert twin_kind(ModelCard(name="old", description="no training config", network=net.config)) is None


def test_a_registered_twin_runs_on_sub_lattices_and_never_on_whole_images(tmp_path, monkeypatch):
    twin_file = _registry(tmp_path, monkeypatch)
    register(twin_file, twin_of="vol")
    model = open_model("vol")
    assert model.sublattice is not None and model.sublattice.card.name == "vol-sublattice"
    geometry = Geometry((1.0, 1.0, 1.0), (0.0,) * 3, tuple(np.eye(3).ravel()))
    image = phantom((8, 32, 32)) + np.random.default_rng(0).normal(0, 0.05, (8, 32, 32)).astype(np.float32)
    volume = Volume(image, geometry)
    with_twin = Denoiser(model, device="cpu", tile_size=32, overlap=8)
    alone = Denoiser(open_model("vol"), device="cpu", tile_size=32, overlap=8)
    alone.model.sublattice = None
    split_twin = with_twin.denoise(volume, modality="mr", grain=(1, 2, 2))
    split_alone = alone.denoise(volume, modality="mr", grain=(1, 2, 2))
    assert split_twin.network == "vol-sublattice" and split_alone.network == "vol"
    # Untrained networks of different weights: a different network ran.
    assert not np.allclose(split_twin.volume.array, split_alone.volume.array, atol=1e-4)
    whole_twin = with_twin.denoise(volume, modality="mr", grain=(1, 1, 1))
    whole_alone = alone.denoise(volume, modality="mr", grain=(1, 1, 1))
    assert whole_twin.network == "vol"
    np.testing.assert_array_equal(whole_twin.volume.array, whole_alone.volume.array)


def test_a_file_not_trained_on_sub_lattices_cannot_be_a_sub_lattice_twin(tmp_path, monkeypatch):
    twin_file = _registry(tmp_path, monkeypatch, twin_strides=(1, 1, 1))
    with pytest.raises(ConfigError, match="--twin-of needs a planar model .* or one trained on sub-lattices"):
        register(twin_file, twin_of="vol")
    # Written into the registry by hand, it is refused when the model opens.
    registry = json.loads((tmp_path / "Models.json").read_text())
    registry["models"][0]["sublattice"] = {"file": "Models/vol-sublattice.safetensors", "sha256": file_sha256(twin_file)}
    (tmp_path / "Models.json").write_text(json.dumps(registry))
    with pytest.raises(ModelFileError, match="registered as the sublattice twin of vol but is not one"):
        open_model("vol")
