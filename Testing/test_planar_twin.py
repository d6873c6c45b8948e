"""Planar twins: a 2D network that denoises each slice on its own, started from a volumetric network,
shipped beside it and used for 2D images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from MedicalDenoiseLib.errors import ModelFileError
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.models.model_files import ModelCard, file_sha256, save_model
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.models.networks.planar import planar_from_volumetric
from MedicalDenoiseLib.models.registry import open_model
from conftest import phantom


def _network(features=(4, 8), blocks=(1, 1), level_input=True, dims=3, seed=0):
    torch.manual_seed(seed)
    return build_network(NetworkConfig(features=features, blocks_per_level=blocks, noise_level_input=level_input,
                                       spatial_dims=dims)).eval()


def test_planar_network_denoises_each_slice_on_its_own():
    net = _network(dims=2)
    x = torch.rand(2, 1, 3, 16, 20)
    sigma = torch.tensor([0.02, 0.08])
    with torch.no_grad():
        whole = net(x, sigma)
        one = net(x[1:2, :, 2], sigma[1:2])  # (B, C, H, W)
    assert whole.shape == x.shape
    torch.testing.assert_close(whole[1:2, :, 2], one)
    assert net.config.size_multiples == (1, 2, 2)


@pytest.mark.parametrize("features,blocks", [((4,), (1,)), ((4, 8), (1, 1))])
def test_twin_equals_the_volumetric_network_on_a_depth_constant_image(features, blocks):
    """Exact wherever the transposed convolutions give both output slices the same kernel (made so here);
    the shipped twins start from the mean of the two and are then fine-tuned."""
    volumetric = _network(features, blocks)
    for module in volumetric.modules():
        if isinstance(module, torch.nn.ConvTranspose3d):
            module.weight.data[:, :, 1] = module.weight.data[:, :, 0]
    twin = planar_from_volumetric(volumetric).eval()
    image = torch.rand(1, 1, 1, 16, 16)
    depth = 24  # slices far enough from the ends that the volumetric network's zero padding is not seen
    with torch.no_grad():
        volume_out = volumetric(image.expand(1, 1, depth, 16, 16).contiguous(), 0.05)[:, :, depth // 2]
        twin_out = twin(image, 0.05)[:, :, 0]
    torch.testing.assert_close(twin_out, volume_out, rtol=1e-4, atol=1e-5)
    assert twin.config.spatial_dims == 2


def test_twin_of_a_planar_network_is_refused():
    with pytest.raises(ValueError, match="volumetric"):
        planar_from_volumetric(_network(dims=2))


def test_a_discriminator_cannot_be_planar():
    with pytest.raises(ValueError, match="volumetric"):
        NetworkConfig(architecture="patch_discriminator", spatial_dims=2)


def _registry_with_twin(tmp_path, monkeypatch, twin_dims=2):
    volumetric, twin = _network(seed=1), _network(dims=twin_dims, seed=2)
    models = tmp_path / "Models"
    models.mkdir()
    files = {}
    for name, net in (("vol", volumetric), ("vol-planar", twin)):
        card = ModelCard(name=name, description="test", network=net.config, noise_range=(0.005, 0.15))
        files[name] = file_sha256(_saved(models / f"{name}.safetensors", net, card))
    registry = {"default": "vol", "models": [{
        "name": "vol", "file": "Models/vol.safetensors", "sha256": files["vol"], "summary": "test",
        "planar": {"file": "Models/vol-planar.safetensors", "sha256": files["vol-planar"]}}]}
    (tmp_path / "Models.json").write_text(json.dumps(registry))
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(tmp_path))
    return volumetric, twin


def _saved(path, net, card):
    save_model(path, net, card)
    return path


def test_a_shipped_model_opens_with_its_twin_and_2d_images_run_through_it(tmp_path, monkeypatch):
    volumetric, twin = _registry_with_twin(tmp_path, monkeypatch)
    model = open_model("vol")
    assert model.planar is not None and model.planar.card.network.spatial_dims == 2
    denoiser = Denoiser(model, device="cpu")
    image = phantom((1, 40, 36))[0] + np.random.default_rng(0).normal(0, 0.05, (40, 36)).astype(np.float32)
    geometry = Geometry((0.5, 0.7), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    out2d = denoiser.denoise(Volume(image, geometry), modality="mr").volume.array
    without_twin = Denoiser(open_model("vol"), device="cpu")
    without_twin.model.planar = None
    out_volumetric = without_twin.denoise(Volume(image, geometry), modality="mr").volume.array
    assert out2d.shape == image.shape
    # Untrained networks of different weights: the two paths must give different results.
    assert not np.allclose(out2d, out_volumetric, atol=1e-4)
    # A volume of several slices still runs the volumetric network.
    stack = np.stack([image] * 3)
    geometry3d = Geometry((0.5, 0.7, 2.0), (0.0,) * 3, tuple(np.eye(3).ravel()))
    out3d = denoiser.denoise(Volume(stack, geometry3d), modality="mr").volume.array
    ref3d = without_twin.denoise(Volume(stack, geometry3d), modality="mr").volume.array
    np.testing.assert_array_equal(out3d, ref3d)


def test_2d_image_through_the_twin_equals_the_twin_run_directly(tmp_path, monkeypatch):
    _, twin = _registry_with_twin(tmp_path, monkeypatch)
    denoiser = Denoiser(open_model("vol"), device="cpu", tile_size=32, overlap=8, refine=False)  # the network alone
    image = phantom((1, 48, 44))[0] + np.random.default_rng(1).normal(0, 0.04, (48, 44)).astype(np.float32)
    result = denoiser.denoise(Volume(image, Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))), modality="mr")
    assert result.used_sigma > 0
    # A planar tile holds as many pixels as a 32³ tile, 181²: the whole image, one call of the twin.
    from MedicalDenoiseLib.inference.normalization import IntensityNormalizer
    from MedicalDenoiseLib.estimation.noise_estimation import estimate_fine_scale_sigma
    normalizer = IntensityNormalizer.fit(image, "mr")
    x = normalizer.normalize(image)
    level = estimate_fine_scale_sigma(x)
    with torch.no_grad():
        direct = twin(torch.from_numpy(x)[None, None], level)[0, 0].numpy()
    np.testing.assert_allclose(result.volume.array, normalizer.denormalize_(direct.copy()), rtol=1e-4, atol=1e-4)


def test_a_registered_twin_that_is_not_planar_is_refused(tmp_path, monkeypatch):
    _registry_with_twin(tmp_path, monkeypatch, twin_dims=3)
    with pytest.raises(ModelFileError, match="registered as the planar twin of vol but is not one"):
        open_model("vol")


def test_a_damaged_twin_is_refused(tmp_path, monkeypatch):
    _registry_with_twin(tmp_path, monkeypatch)
    path = tmp_path / "Models" / "vol-planar.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        open_model("vol")


def test_a_planar_model_used_directly_denoises_slice_by_slice(tmp_path):
    net = _network(dims=2, seed=4)
    path = _saved(tmp_path / "planar.safetensors", net,
                  ModelCard(name="planar", description="test", network=net.config, noise_range=(0.005, 0.15)))
    denoiser = Denoiser(str(path), device="cpu", refine=False)  # the network's path; the refinement sees all slices
    rng = np.random.default_rng(5)
    stack = (np.stack([phantom((1, 36, 40), seed=s)[0] for s in range(3)])
             + rng.normal(0, 0.05, (3, 36, 40))).astype(np.float32)
    geometry = Geometry((0.5, 0.7, 2.0), (0.0,) * 3, tuple(np.eye(3).ravel()))
    whole = denoiser.denoise(Volume(stack, geometry), modality="mr", strength=0.05).volume.array
    one = denoiser.denoise(Volume(stack[1], Geometry((0.5, 0.7), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))),
                           modality="mr", strength=0.05).volume.array
    # Each slice is denoised on its own: the middle slice alone equals the middle slice of the stack, up to
    # the normalisation each input gets from its own intensities.
    assert whole.shape == stack.shape
    assert np.corrcoef((whole[1] - stack[1]).ravel(), (one - stack[1]).ravel())[0, 1] > 0.99
