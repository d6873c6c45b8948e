from __future__ import annotations

import numpy as np
import pytest

from conftest import oblique_geometry, phantom
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.strength import parse_strength
from MedicalDenoiseLib.errors import Cancelled, DeviceError, InputError
from MedicalDenoiseLib.models.model_files import load_model
from MedicalDenoiseLib.io.volume import Geometry, Volume


@pytest.fixture(scope="module")
def tiny_denoiser(tiny_model_file):
    return Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32)


def _mr(shape=(19, 26, 23), sigma=0.05, seed=0) -> Volume:
    clean = phantom(shape) * 800
    noisy = clean + np.random.default_rng(seed).normal(0, sigma * 800, shape)
    return Volume(noisy.astype(np.float32), oblique_geometry(), source="mr-phantom")


def test_output_keeps_shape_geometry_and_input_untouched(tiny_denoiser):
    volume = _mr()
    before = volume.array.copy()
    result = tiny_denoiser.denoise(volume)
    assert result.volume.array.shape == volume.array.shape
    assert result.volume.geometry == volume.geometry
    assert result.volume.array.dtype == np.float32
    assert np.array_equal(volume.array, before)
    assert result.device == "cpu" and result.modality == "mr"
    assert result.estimated_sigma == pytest.approx(40, rel=0.3)


def test_strength_steers_the_noise_level_told_to_the_network(tiny_denoiser):
    volume = _mr()
    auto = tiny_denoiser.denoise(volume, strength="auto")
    mild = tiny_denoiser.denoise(volume, strength="mild")
    strong = tiny_denoiser.denoise(volume, strength="strong")
    fixed = tiny_denoiser.denoise(volume, strength=25.0)
    assert mild.used_sigma < auto.used_sigma < strong.used_sigma
    assert fixed.used_sigma == pytest.approx(25.0)
    assert not np.array_equal(mild.volume.array, strong.volume.array)


def test_nonfinite_voxels_are_reported_not_propagated(tiny_denoiser):
    volume = _mr()
    volume.array[3, 4, 5] = np.nan
    volume.array[6, 7, 8] = np.inf
    result = tiny_denoiser.denoise(volume)
    assert np.isfinite(result.volume.array).all()
    assert any("2 NaN/infinite voxels" in m for m in result.messages)
    assert np.isnan(volume.array[3, 4, 5])  # the input is not repaired in place


def test_constant_volume_comes_back_unchanged(tiny_denoiser):
    volume = Volume(np.full((5, 6, 7), 42, np.int16), oblique_geometry())
    result = tiny_denoiser.denoise(volume)
    assert np.array_equal(result.volume.array, np.full((5, 6, 7), 42))
    assert any("constant" in m for m in result.messages)


@pytest.mark.parametrize("shape", [(1, 20, 24), (3, 5, 7), (24, 30)])
def test_one_slice_tiny_and_2d_images(tiny_denoiser, shape):
    array = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    dims = len(shape)
    geometry = oblique_geometry() if dims == 3 else oblique_geometry().__class__((0.5, 0.5), (1.0, 2.0), (1, 0, 0, 1))
    result = tiny_denoiser.denoise(Volume(array, geometry))
    assert result.volume.array.shape == shape and np.isfinite(result.volume.array).all()


def test_ct_in_hounsfield_units_is_normalised_as_ct(tiny_denoiser, ct_volume):
    untagged = Volume(ct_volume.array, ct_volume.geometry, source="no-modality-tag")
    assert untagged.modality is None
    result = tiny_denoiser.denoise(untagged)  # recognised from the Hounsfield range alone
    assert result.modality == "ct"
    assert result.volume.array.min() < -500  # negative HU survive the round trip
    mr_like = Volume((ct_volume.array.astype(np.float32) + 1000) * 0.5, ct_volume.geometry)
    assert tiny_denoiser.denoise(mr_like).modality == "mr"


@pytest.mark.parametrize("padding", [-32768, -3024, -2000])
def test_ct_padding_is_recognised_and_comes_back_exactly(tiny_denoiser, ct_volume, padding):
    hu = ct_volume.array.copy()
    z, y, x = np.indices(hu.shape)
    outside = (y - 12.5) ** 2 + (x - 11) ** 2 > 11**2  # a circular field of view, as scanners reconstruct
    hu[outside] = padding
    result = tiny_denoiser.denoise(Volume(hu, ct_volume.geometry, source="padded-ct"))
    out = result.volume.array
    assert result.modality == "ct"
    assert np.array_equal(out[outside], hu[outside])
    assert not np.array_equal(out[~outside], hu[~outside].astype(np.float32))
    # The network saw air, not a wall at −32768, beside the field's edge: no extreme values leak inwards.
    assert out[~outside].min() > -1500


def test_cancel_raises_and_progress_reaches_one(tiny_denoiser):
    with pytest.raises(Cancelled):
        tiny_denoiser.denoise(_mr((40, 40, 40)), cancel=lambda: True)
    seen = []
    tiny_denoiser.denoise(_mr(), progress=seen.append)
    assert seen and seen[-1] == 1.0


def test_bad_arguments_are_refused(tiny_denoiser, tiny_model_file):
    with pytest.raises(ValueError, match="strength must be auto, mild, standard, strong"):
        parse_strength("extreme")
    with pytest.raises(ValueError, match="strength must be"):
        parse_strength("-3")
    with pytest.raises(ValueError, match="modality must be one of auto, ct, mr, us"):
        tiny_denoiser.denoise(_mr(), modality="pet")
    with pytest.raises(InputError, match="every voxel is NaN"):
        tiny_denoiser.denoise(Volume(np.full((4, 4, 4), np.nan, np.float32), oblique_geometry()))
    with pytest.raises(InputError, match="2D or 3D"):
        tiny_denoiser.denoise(Volume(np.zeros((2, 3, 4, 5), np.float32), oblique_geometry()))


def test_unavailable_device_is_a_clear_error(tiny_model_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        Denoiser(load_model(tiny_model_file), device="cuda")


def test_flips_average_is_flip_equivariant(tiny_model_file):
    denoiser = Denoiser(load_model(tiny_model_file), device="cpu", flips=True)
    volume = _mr((12, 16, 16))
    out = denoiser.denoise(volume).volume.array
    flipped = denoiser.denoise(volume.with_array(volume.array[::-1].copy())).volume.array
    np.testing.assert_allclose(flipped[::-1], out, atol=1e-3)


def test_shipped_model_clearly_beats_the_noisy_input():
    """The default model removes most of the noise from a structured volume it never saw."""
    clean = phantom((40, 48, 48)) * 1000
    noisy = clean + np.random.default_rng(5).normal(0, 50, clean.shape)
    result = Denoiser(device="cpu").denoise(Volume(noisy.astype(np.float32), oblique_geometry()))
    mse_noisy = np.mean((noisy - clean) ** 2)
    mse_out = np.mean((result.volume.array - clean) ** 2)
    assert mse_out < 0.35 * mse_noisy


def test_gpu_out_of_memory_shrinks_tiles_then_finishes_on_the_cpu(tiny_model_file, monkeypatch):
    import torch

    from MedicalDenoiseLib.inference import denoiser as denoiser_module

    tiles_tried = []

    def fake_tiled(volume, predictor, tile_size, overlap, size_multiple, device, progress, cancel):
        tiles_tried.append((torch.device(device).type, tile_size[0]))
        if torch.device(device).type == "cuda":
            progress(0.5)  # half-way, then out of memory
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        progress(0.25)
        progress(1.0)
        return volume.copy()

    monkeypatch.setattr(denoiser_module, "sliding_window_inference", fake_tiled)
    denoiser = Denoiser(load_model(tiny_model_file), device="cpu", tile_size=128)
    denoiser.device = torch.device("cuda")  # pretend: the fake never touches a GPU
    reported = []
    result = denoiser.denoise(_mr(), progress=reported.append)
    assert tiles_tried == [("cuda", 128), ("cuda", 64), ("cuda", 32), ("cpu", 160)]
    assert result.device == "cpu"
    assert any("retrying with 64³ tiles" in m for m in result.messages)
    assert any("finishing on the CPU" in m for m in result.messages)
    # Progress never goes back across the retries, and ends at 1.
    assert reported == sorted(reported) and reported[-1] == pytest.approx(1.0)
    # The Denoiser stays usable: the next volume runs on the CPU straight away, with the network there.
    assert denoiser.device.type == "cpu"
    assert next(denoiser.network.parameters()).device.type == "cpu"
    tiles_tried.clear()
    second = denoiser.denoise(_mr(seed=1))
    assert tiles_tried == [("cpu", 160)] and second.device == "cpu" and not second.messages


def test_2d_image_runs_as_one_flat_tile_and_matches_the_slice_first_order(tiny_model_file, monkeypatch):
    """A 2D image costs what a volume of its voxel count costs: one flat tile with the slice axis last
    (fast on the CPU) instead of many thin tiles, and the same result up to float rounding."""
    from MedicalDenoiseLib.inference import denoiser as denoiser_module

    image = Volume((phantom((1, 150, 170))[0] * 800).astype(np.float32), Geometry((0.3, 0.3), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)),
                   source="frame")
    calls = []
    real = denoiser_module.sliding_window_inference

    def counting(volume, predictor, **kwargs):
        calls.append(volume.shape)
        return real(volume, lambda tile: (calls.append(tuple(tile.shape)), predictor(tile))[1], **kwargs)

    monkeypatch.setattr(denoiser_module, "sliding_window_inference", counting)
    denoiser = Denoiser(load_model(tiny_model_file), device="cpu", tile_size=64)  # a 64³ tile: 262,144 voxels
    fast = denoiser.denoise(image, strength=20.0).volume.array
    assert calls == [(1, 150, 170, 1), (1, 1, 150, 170, 2)]  # a batch of one image, slice axis last, one flat tile
    calls.clear()
    monkeypatch.setattr(denoiser_module, "_THIN_DEPTH", 0)  # the slice-first order...
    denoiser.denoise(image, strength=20.0)
    assert len(calls) > 5  # ...cuts the image into many thin tiles
    whole = Denoiser(load_model(tiny_model_file), device="cpu", tile_size=192)  # ...or, untiled,
    slow = whole.denoise(image, strength=20.0).volume.array
    np.testing.assert_allclose(fast, slow, atol=1e-3)  # gives the same image


def test_depth_last_network_is_the_same_function(tiny_model_file):
    import torch

    from MedicalDenoiseLib.models.networks.axis_order import depth_last

    network = load_model(tiny_model_file).network
    moved = depth_last(network)
    x = torch.rand(1, 1, 4, 12, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network(x, 0.05)
        got = moved(x.permute(0, 1, 3, 4, 2).contiguous(), 0.05).permute(0, 1, 4, 2, 3)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(expected, x, atol=1e-3)  # the comparison is between outputs that do something


@pytest.mark.parametrize("blind", [False, True])
def test_the_sd_auto_estimates_given_as_strength_gives_the_auto_result(tmp_path, blind):
    """--strength s means "noise of SD s" whatever the model: on correlated noise, passing the SD that auto
    measured reproduces auto, and the SD reported is the one given."""
    import torch

    from MedicalDenoiseLib.models.model_files import ModelCard, save_model
    from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
    from MedicalDenoiseLib.noise.image_domain import CTQuantumNoise

    torch.manual_seed(0)
    config = NetworkConfig(features=(4, 8), blocks_per_level=(1, 1), noise_level_input=not blind)
    path = tmp_path / "m.safetensors"
    save_model(path, build_network(config), ModelCard(name="m", description="test", network=config))
    denoiser = Denoiser(load_model(path), device="cpu")
    clean = phantom((16, 40, 40)) * 800
    noisy = CTQuantumNoise(24.0, cutoff=0.3)(clean, np.random.default_rng(0))  # FBP-shaped, correlated
    volume = Volume(noisy, oblique_geometry(), source="correlated")
    auto = denoiser.denoise(volume, modality="mr")
    given = denoiser.denoise(volume, strength=auto.estimated_sigma, modality="mr")
    np.testing.assert_allclose(given.volume.array, auto.volume.array, rtol=0, atol=1e-3)
    assert given.used_sigma == pytest.approx(auto.estimated_sigma) == pytest.approx(auto.used_sigma)
    assert 0.85 < auto.estimated_sigma / 24.0 < 1.15  # the full SD, not only its finest-scale part
    doubled = denoiser.denoise(volume, strength=2 * auto.estimated_sigma, modality="mr")
    assert not np.allclose(doubled.volume.array, auto.volume.array, atol=1e-2)  # the number steers it


def test_an_image_of_padding_alone_comes_back_unchanged(tiny_denoiser):
    padding_only = Volume(np.full((6, 20, 20), -3024, np.int16), oblique_geometry(), modality="ct", source="empty-ct")
    result = tiny_denoiser.denoise(padding_only)
    assert np.array_equal(result.volume.array, padding_only.array) and "constant" in result.messages[-1]
