from __future__ import annotations

import pytest
import torch

from MedicalDenoiseLib.networks import GANGenerator3D, NetworkConfig, PatchDiscriminator3D, build_network


@pytest.mark.parametrize("architecture", ["residual_autoencoder", "gan_generator"])
def test_generators_keep_shape_on_anisotropic_input(architecture):
    net = build_network(NetworkConfig(architecture=architecture, features=(4, 8, 8), blocks_per_level=(1, 1, 1)))
    x = torch.randn(2, 2, 8, 12, 20)
    assert net(x).shape == (2, 1, 8, 12, 20)


def test_autoencoder_output_is_input_minus_predicted_noise():
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1)))
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), x[:, :1] - net.predict_noise(x))


def test_noise_level_channel_steers_the_output():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1)))
    image = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        low = net(torch.cat([image, torch.full_like(image, 0.01)], 1))
        high = net(torch.cat([image, torch.full_like(image, 0.2)], 1))
    assert not torch.allclose(low, high)


def test_network_without_noise_level_input_takes_one_channel():
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1), noise_level_input=False))
    assert net(torch.randn(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)


def test_gan_generator_starts_equal_to_its_autoencoder():
    torch.manual_seed(0)
    config = NetworkConfig(features=(4, 8), blocks_per_level=(1, 1))
    autoencoder = build_network(config)
    generator = GANGenerator3D(NetworkConfig(architecture="gan_generator", features=(4, 8), blocks_per_level=(1, 1)))
    missing, unexpected = generator.load_state_dict(autoencoder.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("refine.") for k in missing)
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(generator(x), autoencoder(x), atol=1e-6)


def test_patch_discriminator_scores_patches():
    disc = PatchDiscriminator3D(NetworkConfig(architecture="patch_discriminator", features=(4, 8, 16), blocks_per_level=(1, 1, 1)))
    assert disc(torch.randn(2, 1, 16, 16, 16)).shape == (2, 1, 4, 4, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"architecture": "vnet"}, "architecture must be one of"),
        ({"features": (4, 8), "blocks_per_level": (1,)}, "blocks_per_level must have one entry per level"),
        ({"features": (0, 8), "blocks_per_level": (1, 1)}, "features must be positive"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = NetworkConfig(features=(8, 16, 32), blocks_per_level=(1, 2, 3))
    assert NetworkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown network config keys: depth"):
        NetworkConfig.from_dict({**config.to_dict(), "depth": 3})
