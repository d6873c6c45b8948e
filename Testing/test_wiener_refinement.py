"""Wiener refinement: the window's noise spectrum is exact, the overlap-add is an identity when nothing is noise,
told the truth it removes correlated noise the pilot left, and the Denoiser reports, cancels and keeps its
contracts with it."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import phantom
from MedicalDenoiseLib.errors import Cancelled
from MedicalDenoiseLib.estimation.scan_noise import ScanNoise
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.wiener_refinement import _window, block_shape, refine, window_spectrum
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.models.model_files import load_model


def _kernel() -> np.ndarray:
    kernel = np.zeros((17, 17))
    kernel[8, 8] = 1.0
    kernel[8, 7] = kernel[8, 9] = 0.4
    kernel[7, 8] = kernel[9, 8] = 0.3
    return kernel


@pytest.mark.parametrize("noise", [ScanNoise(1.0, band=(0.4, 0.3, 0.2)), ScanNoise(1.0, kernel=_kernel(), correlation_z=0.3)],
                         ids=["k-space band", "flat-patch kernel"])
def test_window_spectrum_matches_the_windowed_power_of_drawn_noise(noise):
    shape, edge = (64, 64, 64), 16
    expected = window_spectrum(noise, (edge,) * 3, shape)
    w = _window(edge)
    window = w[:, None, None] * w[None, :, None] * w[None, None, :]
    rng = np.random.default_rng(0)
    powers = []
    for _ in range(4):
        drawn = noise.draw(shape, rng)
        for z in range(0, 48, 16):
            for y in range(0, 48, 16):
                for x in range(0, 48, 16):
                    powers.append(np.abs(np.fft.fftn(drawn[z:z + edge, y:y + edge, x:x + edge] * window)) ** 2)
    measured = np.mean(powers, axis=0)
    assert measured.sum() / expected.sum() == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(measured.ravel(), expected.ravel())[0, 1] > 0.97


@pytest.mark.parametrize("shape", [(40, 50, 37), (20, 33, 70), (3, 64, 64), (1, 40, 30)])
def test_windows_add_back_to_the_input_when_nothing_is_noise(shape):
    noisy = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    spectrum = np.full(block_shape(shape), 1e-12, np.float32)
    np.testing.assert_allclose(refine(noisy, noisy, spectrum), noisy, atol=1e-5)


def test_window_shape_follows_the_volume_and_the_slice_thickness():
    assert block_shape((64, 128, 128)) == (16, 16, 16)
    assert block_shape((20, 128, 128)) == (8, 16, 16)
    assert block_shape((8, 128, 128)) == (1, 16, 16)
    assert block_shape((64, 128, 128), slice_ratio=6.5) == (1, 16, 16)  # thick slices: in-plane windows only
    assert block_shape((1, 12, 64)) == (1, 1, 16)


def test_told_the_noise_and_a_clean_pilot_it_removes_most_correlated_noise():
    clean = (phantom((32, 64, 64)) * 1.0).astype(np.float32)
    noise = ScanNoise(0.05, band=(0.5, 0.3, 0.3))
    noisy = clean + noise.draw(clean.shape, np.random.default_rng(2))
    block = block_shape(clean.shape)
    refined = refine(noisy, clean, window_spectrum(noise, block, clean.shape))
    error_in, error_out = np.mean((noisy - clean) ** 2), np.mean((refined - clean) ** 2)
    assert error_out < 0.25 * error_in
    # The pilot's own noise-free detail is not what comes out: the noisy image's is, weighed.
    assert not np.allclose(refined, clean, atol=1e-3)


def _grainy_volume(shape=(20, 64, 64)) -> Volume:
    rng = np.random.default_rng(4)
    noise = ScanNoise(30.0, band=(0.5, 0.3, 0.3)).draw(shape, rng)
    array = (phantom(shape) * 1000 + 200 + noise).astype(np.float32)
    return Volume(array, Geometry((1.0, 1.0, 1.0), (1.0, 2.0, 3.0), tuple(np.eye(3).ravel())), modality="mr")


def test_denoiser_refines_by_default_says_so_and_keeps_geometry(tiny_model_file):
    volume = _grainy_volume()
    refined = Denoiser(load_model(tiny_model_file), device="cpu").denoise(volume)
    plain = Denoiser(load_model(tiny_model_file), device="cpu", refine=False).denoise(volume)
    assert refined.refinement is not None and plain.refinement is None
    assert "Wiener-filtered in 8×16×16 windows" in refined.describe() and "k-space" in refined.describe()
    assert plain.describe() == plain.grain.describe()
    assert not np.allclose(refined.volume.array, plain.volume.array)
    assert refined.volume.geometry == volume.geometry and refined.volume.array.shape == volume.array.shape


def test_strength_sets_the_noise_the_refinement_removes(tiny_model_file):
    volume = _grainy_volume()
    denoiser = Denoiser(load_model(tiny_model_file), device="cpu")
    removed = {s: float(np.std(volume.array - denoiser.denoise(volume, strength=s).volume.array)) for s in ("mild", "strong")}
    assert removed["strong"] > removed["mild"]


def test_refinement_reports_monotone_progress_and_cancels(tiny_model_file):
    volume = _grainy_volume((40, 64, 64))
    seen = []
    Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32).denoise(volume, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert any(0.9 < f < 1.0 for f in seen)  # the refinement's own steps, after the network's 90 %
    calls = []

    def cancel_in_refinement():
        calls.append(1)
        return bool(seen) and len(calls) > 1 and seen[-1] >= 0.9

    seen.clear()
    with pytest.raises(Cancelled):
        Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32).denoise(volume, progress=seen.append,
                                                                                  cancel=cancel_in_refinement)
    assert seen[-1] >= 0.9  # it got past the network: the refinement itself stopped
