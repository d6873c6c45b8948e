from __future__ import annotations

import pytest
import torch

from MedicalDenoiseLib.models.networks import GANGenerator, NetworkConfig, PatchDiscriminator3D, build_network


@pytest.mark.parametrize("architecture", ["residual_autoencoder", "gan_generator"])
def test_generators_keep_shape_on_anisotropic_input(architecture):
    net = build_network(NetworkConfig(architecture=architecture, features=(4, 8, 8), blocks_per_level=(1, 1, 1)))
    x = torch.randn(2, 1, 8, 12, 20)
    assert net(x, torch.tensor([0.02, 0.05])).shape == (2, 1, 8, 12, 20)


def test_autoencoder_output_is_input_minus_predicted_noise():
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1)))
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x, 0.05), x - net.predict_noise(x, 0.05))


def test_noise_level_channel_steers_the_output():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1)))
    image = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        low = net(image, 0.01)
        high = net(image, 0.2)
    assert not torch.allclose(low, high)


def test_network_without_noise_level_input_takes_one_channel():
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1), noise_level_input=False))
    assert net(torch.randn(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)


def test_gan_generator_starts_equal_to_its_autoencoder():
    torch.manual_seed(0)
    config = NetworkConfig(features=(4, 8), blocks_per_level=(1, 1))
    autoencoder = build_network(config)
    generator = GANGenerator(NetworkConfig(architecture="gan_generator", features=(4, 8), blocks_per_level=(1, 1)))
    missing, unexpected = generator.load_state_dict(autoencoder.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("refine.") for k in missing)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(generator(x, 0.05), autoencoder(x, 0.05), atol=1e-6)


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


def test_network_builds_its_conditioning_from_a_number_or_a_batch_of_levels():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1)))
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        batched = net(x, torch.tensor([0.03, 0.08]))
        assert torch.allclose(batched[:1], net(x[:1], 0.03), atol=1e-6)
        assert torch.allclose(batched[1:], net(x[1:], 0.08), atol=1e-6)
    with pytest.raises(ValueError, match=r"network\(x, sigma\)"):
        net(x)


def test_blind_network_ignores_sigma():
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1), noise_level_input=False))
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, 0.3))


@pytest.mark.parametrize("name", ["autoencoder-v1", "autoencoder-v2", "gan-v1"])
def test_shipped_models_give_bitwise_the_outputs_of_the_two_channel_input_they_were_trained_with(name):
    """The level channel is now built inside the network; old model files must not change a single bit."""
    from MedicalDenoiseLib.models.registry import open_model

    net = open_model(name).network
    x = torch.rand(1, 1, 16, 24, 24, generator=torch.Generator().manual_seed(1))
    level = 0.037
    legacy = torch.cat([x, torch.full_like(x, level)], dim=1)  # the caller-built input of earlier releases
    legacy = torch.cat([legacy[:, :1], legacy[:, 1:] * net.config.noise_level_scale], dim=1)
    with torch.inference_mode():
        hook = net.stem.register_forward_pre_hook(lambda module, args: (legacy,))
        try:
            expected = net(x, 0.5)  # the hook swaps in the legacy stem input, whatever sigma says
        finally:
            hook.remove()
        assert torch.equal(net(x, level), expected)
