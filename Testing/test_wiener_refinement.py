"""Wiener refinement: the window's noise spectrum is exact, the overlap-add is an identity when nothing is noise,
told the truth it removes correlated noise the pilot left, and the Denoiser reports, cancels and keeps its
contracts with it."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import neighbour_kernel, phantom
from MedicalDenoiseLib.errors import Cancelled
from MedicalDenoiseLib.estimation.scan_noise import ScanNoise
from MedicalDenoiseLib.inference.denoiser import NETWORK_SHARE, Denoiser
from MedicalDenoiseLib.inference import wiener_refinement
from MedicalDenoiseLib.inference.wiener_refinement import _window, block_shape, lattice_bins, refine, window_spectrum
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.models.model_files import load_model


def _kernel() -> np.ndarray:
    return neighbour_kernel(0.4, 0.3)


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
    assert any(NETWORK_SHARE < f < 1.0 for f in seen)  # the refinement's own steps, after the network's share
    calls = []

    def cancel_in_refinement():
        calls.append(1)
        return bool(seen) and len(calls) > 1 and seen[-1] >= NETWORK_SHARE

    seen.clear()
    with pytest.raises(Cancelled):
        Denoiser(load_model(tiny_model_file), device="cpu", tile_size=32).denoise(volume, progress=seen.append,
                                                                                  cancel=cancel_in_refinement)
    assert seen[-1] >= NETWORK_SHARE  # it got past the network: the refinement itself stopped


def test_an_intensity_offset_shifts_the_output_and_flat_noise_goes():
    # The window's mean is set aside: on a flat image (CT water, MR air) the result must not depend on its level,
    # and a perfect flat pilot leaves no noise kept along the frequency axes (no row or column blotches).
    shape = (32, 64, 64)
    noise = ScanNoise(0.05, kernel=_kernel(), correlation_z=0.2)
    grain = noise.draw(shape, np.random.default_rng(5)).astype(np.float32)
    spectrum = window_spectrum(noise, block_shape(shape), shape)
    flat = np.zeros(shape, np.float32)
    at_zero = refine(grain, flat, spectrum)
    at_level = refine(grain + 10.0, flat + 10.0, spectrum) - 10.0
    np.testing.assert_allclose(at_level, at_zero, atol=2e-4)
    # Only the coarsest frequencies (below KEPT_BELOW) pass: a few per cent of this grain's power.
    assert np.mean(at_zero ** 2) < 0.05 * np.mean(grain ** 2)


def test_a_faint_blob_the_pilot_smoothed_away_survives(monkeypatch):
    # The pilot cannot vouch for a faint lesion it has flattened; its coarse frequencies pass unfiltered.
    shape = (32, 64, 64)
    z, y, x = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    blob = (0.05 * np.exp(-(z ** 2 + y ** 2 + x ** 2) / (2 * 2.0 ** 2))).astype(np.float32)
    noise = ScanNoise(0.05)
    grain = noise.draw(shape, np.random.default_rng(8)).astype(np.float32)
    spectrum = window_spectrum(noise, block_shape(shape), shape)
    flat = np.zeros(shape, np.float32)
    centre = tuple(n // 2 for n in shape)
    kept = refine(blob + grain, flat, spectrum) - refine(grain, flat, spectrum)
    monkeypatch.setattr(wiener_refinement, "KEPT_BELOW", 0.0)
    judged_by_pilot = refine(blob + grain, flat, spectrum) - refine(grain, flat, spectrum)
    assert kept[centre] > 0.4 * blob.max() and kept[centre] > 3 * judged_by_pilot[centre]


def test_coarse_speckle_is_filtered_down_to_the_floor_and_strong_structure_stays():
    # Speckle-like noise: most of its power below KEPT_BELOW. A flat pilot (it found nothing) and a bright blob the
    # pilot also lost: with the floor the coarse noise goes in part (down to the floor), the blob stays by its own
    # power.
    from scipy.ndimage import gaussian_filter
    assert wiener_refinement.coarse_floor("us") == wiener_refinement.SPECKLE_COARSE_FLOOR < 1.0
    assert wiener_refinement.coarse_floor("mr") == wiener_refinement.coarse_floor("ct") == 1.0
    shape, block = (1, 192, 192), (1, 16, 16)
    rng = np.random.default_rng(3)

    def speckle() -> np.ndarray:
        coarse = gaussian_filter(rng.normal(size=shape), (0, 2.0, 2.0))
        return (coarse / coarse.std()).astype(np.float32)

    w = _window(16)[None, :] * _window(16)[:, None]
    spectrum = np.mean([np.abs(np.fft.fft2(n[0, y:y + 16, x:x + 16] * w)) ** 2 for n in (speckle() for _ in range(4))
                        for y in range(0, 176, 16) for x in range(0, 176, 16)], axis=0)[None].astype(np.float32)
    y, x = np.mgrid[0:192, 0:192] - 96
    blob = (6.0 * np.exp(-(x ** 2 + y ** 2) / (2 * 4.0 ** 2)))[None].astype(np.float32)
    grain, flat = speckle(), np.zeros(shape, np.float32)

    kept_band = wiener_refinement.kept_bins(block)[0]

    def coarse_sd(image: np.ndarray) -> float:  # the amplitude in the kept band, window by window (offset by 8)
        return float(np.sqrt(np.mean([np.abs(np.fft.fft2(image[0, y:y + 16, x:x + 16] * w))[kept_band] ** 2
                                      for y in range(8, 168, 16) for x in range(8, 168, 16)])))

    passed = refine(grain, flat, spectrum)
    floored = refine(grain, flat, spectrum, floor=0.7)
    assert 0.7 * coarse_sd(passed) < coarse_sd(floored) < 0.85 * coarse_sd(passed)
    # What the band carries of the blob (its windows' means come from the pilot either way) keeps at least the
    # floor's share, and more than the noise does, by its own power.
    kept_passed = refine(blob + grain, flat, spectrum) - passed
    kept_floored = refine(blob + grain, flat, spectrum, floor=0.7) - floored
    assert kept_floored[0, 96, 96] / kept_passed[0, 96, 96] > coarse_sd(floored) / coarse_sd(passed)
    assert kept_passed[0, 96, 96] > 0.3 * blob.max()


def test_the_denoiser_filters_the_coarse_band_for_ultrasound_only_and_says_so(tiny_model_file):
    denoiser = Denoiser(load_model(tiny_model_file), device="cpu")
    rng = np.random.default_rng(5)
    frame = np.clip(np.rint(60 + rng.rayleigh(15, (64, 80))), 0, 255).astype(np.uint8)
    flat = Geometry((0.3, 0.3), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    said = denoiser.denoise(Volume(frame, flat, modality="us", source="b-mode")).describe()
    assert "the coarsest band too (speckle is as coarse; at least 70% of it kept)" in said
    mr = Volume(frame.astype(np.float32) * 10, flat, modality="mr", source="mr")
    said = denoiser.denoise(mr).describe()
    assert "Wiener-filtered" in said and "coarsest band" not in said


def test_lattice_bins_sit_at_the_sub_grids_frequencies():
    bins = lattice_bins((1, 16, 16), (1, 2, 2))
    for index in ((0, 8, 0), (0, 0, 8), (0, 8, 8), (0, 7, 1), (0, 9, 15)):
        assert bins[index]
    for index in ((0, 0, 0), (0, 1, 0), (0, 4, 4), (0, 8, 4)):
        assert not bins[index]
    assert not lattice_bins((16, 16, 16), (1, 1, 1)).any()
    assert lattice_bins((16, 16, 16), (1, 3, 1))[0, 5, 0] and lattice_bins((16, 16, 16), (1, 3, 1))[0, 11, 0]


def test_a_pilot_that_kept_the_inputs_lattice_noise_does_not_pass_it_on():
    # Sub-grids keep their own means, so a pilot from 2×2 sub-grids still holds the input's noise at Nyquist; judged
    # on the pilot, that noise would stay and show as a stripe pattern. Judged on the noisy image it goes.
    shape = (4, 128, 128)
    rng = np.random.default_rng(6)
    noisy = rng.normal(0.0, 0.05, shape).astype(np.float32)
    f = np.abs(np.fft.fftfreq(128))
    # Around (Nyquist, 0), as wide as the lattice bins of a 16-voxel window (±1.5 bins): rows alternating, slowly varying.
    near_lattice = (f > 0.4)[:, None] & (f < 0.1)[None, :]
    pilot = np.fft.ifftn(np.fft.fftn(noisy, axes=(1, 2)) * near_lattice, axes=(1, 2)).real.astype(np.float32)
    spectrum = window_spectrum(ScanNoise(0.05), block_shape(shape), shape)

    def row_lattice_power(image):
        return float((np.abs(np.fft.fftn(image, axes=(1, 2))) ** 2)[:, near_lattice].mean())

    whole = refine(noisy, pilot, spectrum, (1, 1, 1))
    sub_grids = refine(noisy, pilot, spectrum, (1, 2, 2))
    # White noise judged on itself keeps E(|Y|² − S)⁺ = 0.37 S per bin; judged on such a pilot, 0.60 S.
    assert row_lattice_power(sub_grids) < 0.75 * row_lattice_power(whole)
