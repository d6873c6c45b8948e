"""Adapting a model to one scan: the scan's noise, the recorrupted pairs' loss, the budget, refusals and the card."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import oblique_geometry, phantom
from MedicalDenoiseLib.adaptation import fine_tune
from MedicalDenoiseLib.adaptation.fine_tune import adapt_to_scan
from MedicalDenoiseLib.adaptation.fitted_series import fitted_to, other_series_note, voxels_sha256
from MedicalDenoiseLib.adaptation.lesion_check import lesion_retention
from MedicalDenoiseLib.adaptation.recorrupted_pairs import RecorruptedPairs
from MedicalDenoiseLib.adaptation.fine_tune import FLAT_PATCH_SHARE, KEPT_SHARE, interpolated_weights
from MedicalDenoiseLib.estimation.scan_noise import ScanNoise, acquired_band, measure_scan_noise
from MedicalDenoiseLib.errors import InputError
from MedicalDenoiseLib.estimation.noise_estimation import estimate_noise
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.models.model_files import load_model, save_model
from MedicalDenoiseLib.noise import noise_kind

SHAPE = (24, 64, 64)


def _kspace_scan(sigma=0.04, acquired=(0.8, 0.6, 0.6), seed=0):
    clean = phantom(SHAPE, seed=seed)
    model = noise_kind("mr-kspace").fixed(sigma=sigma, acquired=acquired, acquisition="3d", coils=1)
    return model.simulate(clean, np.random.default_rng(seed))


def _volume(array, source="scan.nii.gz", modality="mr") -> Volume:
    return Volume(array.astype(np.float32), oblique_geometry(), modality=modality, source=source)


def test_band_and_level_read_from_a_zero_filled_scan():
    realised = _kspace_scan()
    noisy = realised.noisy.astype(np.float32)
    noise = measure_scan_noise(noisy, estimate_noise(noisy), "mr")
    assert noise.band is not None
    assert noise.band[1] == pytest.approx(0.3, abs=0.02) and noise.band[2] == pytest.approx(0.3, abs=0.02)
    assert noise.sd == pytest.approx(float((realised.noisy - realised.clean).std()), rel=0.15)


def test_white_noise_shows_no_band_and_falls_back_to_the_kernel():
    rng = np.random.default_rng(1)
    noisy = (phantom(SHAPE) + rng.normal(0, 0.04, SHAPE)).astype(np.float32)
    power = np.abs(np.fft.fftn(noisy - noisy.mean())) ** 2
    assert acquired_band(power)[1:] == (0.5, 0.5)
    noise = measure_scan_noise(noisy, estimate_noise(noisy), "mr", FLAT_PATCH_SHARE)
    assert noise.band is None and noise.sd == pytest.approx(FLAT_PATCH_SHARE * 0.04, rel=0.25)


def test_drawn_noise_has_the_band_and_the_level():
    noise = ScanNoise(0.05, band=(0.5, 0.25, 0.25))
    draw = noise.draw((16, 64, 64), np.random.default_rng(0))
    assert draw.std() == pytest.approx(0.05, rel=1e-3)
    power = np.abs(np.fft.fftn(draw)) ** 2
    outside = np.abs(np.fft.fftfreq(64)) > 0.26
    assert power[:, outside, :].max() < 1e-8 * power.max()


def test_recorrupted_loss_does_not_reward_the_identity_on_correlated_noise():
    """The R2R loss ranks a denoiser as the clean-image loss would: the perfect one beats the identity by the
    identity's true error, (1 + α²)σ², even though the noise is correlated."""
    clean = phantom(SHAPE)
    noise = ScanNoise(0.05, band=(0.5, 0.3, 0.3))
    scan = clean + noise.draw(SHAPE, np.random.default_rng(3))
    pairs = RecorruptedPairs(scan, noise, (1, 2, 2), (8, 16, 16), (4, 4, 4))
    # Noise of SD 0 draws the same random numbers: the same places and sub-lattices, clean.
    truths = RecorruptedPairs(clean, ScanNoise(0.0, band=noise.band), (1, 2, 2), (8, 16, 16), (4, 4, 4))
    rng = np.random.default_rng(4)
    identity, perfect = [], []
    for _ in range(40):
        state = rng.bit_generator.state
        inputs, targets = pairs.batch(4, rng)
        rng.bit_generator.state = state
        truth, _ = truths.batch(4, rng)
        identity.append(float(torch.mean((inputs - targets) ** 2)))
        perfect.append(float(torch.mean((truth - targets) ** 2)))
    gap = np.mean(identity) - np.mean(perfect)
    assert gap == pytest.approx((1 + pairs.alpha**2) * 0.05**2, rel=0.1)


def test_too_small_constant_and_noiseless_volumes_are_refused(tiny_model_file):
    with pytest.raises(InputError, match="too small to adapt on"):
        adapt_to_scan(_volume(phantom((8, 64, 64))), str(tiny_model_file), seconds=5)
    with pytest.raises(InputError, match="constant"):
        adapt_to_scan(_volume(np.full(SHAPE, 7.0)), str(tiny_model_file), seconds=5)
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32), SHAPE).copy()
    with pytest.raises(InputError, match="no measurable noise"):
        adapt_to_scan(_volume(ramp), str(tiny_model_file), seconds=5)


def test_the_budget_is_kept_on_a_clock_that_only_steps_forward(monkeypatch, tiny_model_file):
    """With a clock that advances 1 s each time it is read, training stops before the budget is spent."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(fine_tune.time, "perf_counter", lambda: float(next(ticks)))
    # The lesion check's denoising reads the same clock many times; here only the training loop is timed.
    monkeypatch.setattr(fine_tune, "lesion_retention", lambda *args: 1.0)
    realised = _kspace_scan()
    adaptation = adapt_to_scan(_volume(realised.noisy), str(tiny_model_file), seconds=20)
    assert 0 < adaptation.steps < 20
    assert adaptation.seconds <= 20 + 5  # the check after the last step


def test_adapted_model_card_and_series_check(tmp_path, tiny_model_file):
    realised = _kspace_scan()
    volume = _volume(realised.noisy, source="/data/patient-free-name.nii.gz")
    adaptation = adapt_to_scan(volume, str(tiny_model_file), seconds=20, keep_time_to_denoise=False)
    assert adaptation.kept, adaptation.describe()  # an untrained network learns from its first steps
    assert "adapted to this scan" in adaptation.describe()
    path = tmp_path / "adapted.safetensors"
    save_model(path, adaptation.model.network, adaptation.model.card)
    card = load_model(path).card
    assert fitted_to(card) == ("patient-free-name.nii.gz", voxels_sha256(realised.noisy))
    assert card.training["adaptation"]["steps"] == adaptation.steps > 0
    assert card.training["adaptation"]["from"] == "tiny-test"
    assert card.training["adaptation"]["lesions_kept"] == round(adaptation.lesions.adapted, 3)
    assert card.training["adaptation"]["kept_share"] == KEPT_SHARE
    assert other_series_note(card, realised.noisy) is None
    assert "fitted to another series" in other_series_note(card, realised.noisy + 1)
    # The adapted network is a different network, and the Denoiser runs it on the scan's geometry.
    base = load_model(tiny_model_file).network.state_dict()
    moved = load_model(path).network.state_dict()
    assert any(not torch.equal(base[k], moved[k]) for k in base)
    result = Denoiser(load_model(path)).denoise(volume)
    assert result.volume.geometry == volume.geometry and result.volume.array.shape == SHAPE


def test_adapted_weights_keep_a_share_of_the_fitted_change():
    shipped = {"weight": torch.tensor([1.0, -2.0]), "steps": torch.tensor(3)}
    fitted = {"weight": torch.tensor([3.0, 2.0]), "steps": torch.tensor(7)}
    halfway = interpolated_weights(shipped, fitted, 0.5)
    assert torch.equal(halfway["weight"], torch.tensor([2.0, 0.0]))
    assert int(halfway["steps"]) == 7  # integer buffers (counters) are the fitted network's
    assert torch.equal(interpolated_weights(shipped, fitted, 1.0)["weight"], fitted["weight"])
    assert torch.equal(interpolated_weights(shipped, fitted, 0.0)["weight"], shipped["weight"])


class _Filter(torch.nn.Module):
    """A stand-in network: the identity, or a 5-voxel box mean that flattens small lesions."""

    def __init__(self, config, smooth: bool) -> None:
        super().__init__()
        self.config, self.smooth = config, smooth

    def forward(self, x, level=None):
        return torch.nn.functional.avg_pool3d(x, 5, stride=1, padding=2, count_include_pad=False) if self.smooth else x


def test_lesion_check_fails_a_model_that_flattens_small_lesions(tiny_model_file):
    tiny = load_model(tiny_model_file)
    identity, smoother = (replace(tiny, network=_Filter(tiny.card.network, smooth)) for smooth in (False, True))
    scan = _kspace_scan().noisy.astype(np.float32)
    args = (scan, _volume(scan), "mr", (1, 2, 2), 0.04, "cpu")
    # Both run as the Denoiser runs them, Wiener refinement included: it shrinks the identity's lesions a little and
    # gives back part of what the box mean flattened.
    kept_by_identity, kept_by_smoother = lesion_retention(identity, *args), lesion_retention(smoother, *args)
    assert kept_by_identity > 0.8 and kept_by_smoother < kept_by_identity - 0.05
    plain = replace(smoother, network=smoother.network)
    assert lesion_retention(plain, *args, refine=False) < 0.6


def test_an_adapted_model_that_takes_lesions_is_not_kept(monkeypatch, tiny_model_file):
    base = load_model(tiny_model_file)
    monkeypatch.setattr(fine_tune, "lesion_retention", lambda model, *args: 0.9 if model is base else 0.3)
    adaptation = adapt_to_scan(_volume(_kspace_scan().noisy), base, seconds=20, keep_time_to_denoise=False)
    assert adaptation.steps > 0 and not adaptation.kept and adaptation.model is base
    assert "adapting took small lesions: it kept 30% of their amplitude, the shipped model 90%" in adaptation.describe()


def test_a_scan_with_no_place_for_a_lesion_is_not_adapted(monkeypatch, tiny_model_file):
    def no_room(*args):
        raise ValueError("no flat voxel lies 3 radii from the border")
    monkeypatch.setattr(fine_tune, "lesion_retention", no_room)
    adaptation = adapt_to_scan(_volume(_kspace_scan().noisy), str(tiny_model_file), seconds=20)
    assert adaptation.steps == 0 and not adaptation.kept
    assert adaptation.describe().startswith("not adapted: a fitted model could not be checked for small lesions")
