"""Voxels that recorded nothing (a B-mode fan's surround, a masked MR's zeros, CT padding) come back exactly."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import oblique_geometry, phantom
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.outside_field import AIR_HU, find_outside_field
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.models.model_files import load_model


@pytest.fixture(scope="module")
def tiny_denoiser(tiny_model_file):
    return Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32)


def _fan_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit B-mode-like frame: speckled tissue in a fan, zeros around it, and a few dark speckle voxels at
    zero well inside the fan (the second array: True outside the fan)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128]
    radius, angle = np.hypot(y + 20, x - 64), np.arctan2(x - 64, y + 20)
    inside = (radius > 30) & (radius < 110) & (np.abs(angle) < 0.6)
    tissue = 60 + 40 * (np.hypot(y - 55, x - 64) < 15) + rng.rayleigh(12, y.shape)
    deep = (radius > 33) & (radius < 107) & (np.abs(angle) < 0.55)  # a zero touching the surround joins it
    tissue[deep & (rng.random(y.shape) < 0.01)] = 0  # isolated dark speckle at zero
    frame = np.where(inside, np.clip(np.rint(tissue), 0, 255), 0).astype(np.uint8)
    return frame, ~inside


def test_the_fan_surround_is_found_and_dark_speckle_inside_is_not():
    frame, outside = _fan_frame()
    found = find_outside_field(frame.astype(np.float32), "us")
    assert found is not None and found.value == 0 and found.seen_as == 0
    assert np.array_equal(found.mask, outside)
    assert np.count_nonzero((frame == 0) & ~outside) > 0  # the zeros inside the fan exist and are left to denoise


def test_a_b_mode_frame_keeps_its_black_surround_exactly(tiny_denoiser):
    frame, outside = _fan_frame()
    volume = Volume(frame, Geometry((0.3, 0.3), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)), modality="us", source="fan")
    out = tiny_denoiser.denoise(volume).volume.array
    assert np.all(out[outside] == 0)
    assert not np.allclose(out[~outside], frame[~outside])


def test_a_masked_mr_keeps_its_zeros_and_a_noisy_background_has_no_outside(tiny_denoiser):
    rng = np.random.default_rng(3)
    clean = phantom((19, 26, 23)) * 800
    noisy = np.abs(clean + rng.normal(0, 40, clean.shape))  # magnitude images are not negative
    z, y, x = np.indices(clean.shape)
    brain = (y - 13) ** 2 + (x - 11) ** 2 < 8**2
    masked = np.where(brain, noisy, 0).astype(np.float32)
    result = tiny_denoiser.denoise(Volume(masked, oblique_geometry(), modality="mr", source="masked-mr"))
    assert np.all(result.volume.array[~brain] == 0)
    assert not np.allclose(result.volume.array[brain], masked[brain])
    # Integer magnitude noise in air: zeros here and there, in clusters far below a region's size.
    background = np.rint(np.abs(rng.normal(0, 1.5, (8, 64, 64)) + 1j * rng.normal(0, 1.5, (8, 64, 64))))
    assert np.count_nonzero(background == 0) > 0
    assert find_outside_field(background.astype(np.float32), "mr") is None


def test_noise_clipped_at_the_floor_a_cyst_and_a_lone_minimum_are_not_outside():
    rng = np.random.default_rng(6)
    # Air at −1024 HU with noise clipped at the pixel type's floor: half the voxels at the minimum, in clusters.
    air = np.maximum(np.rint(rng.normal(-1024, 20, (3, 256, 256))), -1024).astype(np.float32)
    air[:, 64:192, 64:192] = 40 + rng.normal(0, 20, (3, 128, 128))
    assert np.count_nonzero(air == -1024) > 0.3 * air[:, :64].size
    assert find_outside_field(air, "ct") is None
    # A dark region at exactly the minimum inside anatomy (an anechoic cyst), away from the border.
    frame = np.clip(np.rint(60 + rng.rayleigh(12, (128, 128))), 1, 255).astype(np.float32)
    y, x = np.mgrid[0:128, 0:128]
    frame[(y - 64) ** 2 + (x - 64) ** 2 < 15**2] = 0
    assert find_outside_field(frame, "us") is None
    # A small image whose darkest voxel is just noise.
    small = rng.normal(100, 10, (4, 20, 30)).astype(np.float32)
    assert find_outside_field(small, "mr") is None


def test_non_finite_voxels_are_never_outside():
    frame, outside = _fan_frame()
    image = frame.astype(np.float32)
    image[40:44, 60:64] = np.nan  # inside the fan; filled with the median, here the minimum, before the search
    filled = np.where(np.isnan(image), 0, image)
    found = find_outside_field(filled, "us", excluded=np.isnan(image))
    assert found is not None and not found.mask[40:44, 60:64].any()
    assert np.array_equal(found.mask, outside)


def test_ct_padding_is_shown_to_the_network_as_air():
    hu = np.full((4, 40, 40), 40.0, np.float32)
    hu[:, :, :8] = -3024.0
    found = find_outside_field(hu, "ct")
    assert found is not None and found.value == -3024.0 and found.seen_as == AIR_HU
    assert np.array_equal(found.mask, hu == -3024.0)
    seen = found.hidden(hu)
    assert np.all(seen[:, :, :8] == AIR_HU) and np.all(hu[:, :, :8] == -3024.0)  # the input is not modified
    restored = found.restore_(seen.copy())
    assert np.array_equal(restored, hu)
