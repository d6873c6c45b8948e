"""The stride rule: from the estimator's noise autocorrelation, the sub-lattice strides that make the noise white,
for each noise kind the library simulates."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import phantom
from MedicalDenoiseLib.inference.grain import AUTO_MAX_STRIDE, Grain, measure_grain, parse_grain
from MedicalDenoiseLib.estimation.noise_estimation import estimate_noise
from MedicalDenoiseLib.noise import noise_kind

SHAPE = (12, 128, 128)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return phantom(SHAPE, seed=3)


def _grain(noisy: np.ndarray) -> Grain:
    return measure_grain(estimate_noise(noisy), noisy)


@pytest.mark.parametrize("fraction, stride", [(1.0, 1), (0.65, 2), (0.5, 2), (0.4, 3), (0.3, 4)])
def test_zero_filled_kspace_gets_the_stride_its_sinc_asks_for(image, fraction, stride):
    noisy = noise_kind("mr-kspace").fixed(sigma=0.03, acquired=(1.0, fraction, fraction)).simulate(
        image, np.random.default_rng(0)).noisy
    grain = _grain(noisy)
    assert grain.measured[1:] == (stride, stride)
    assert grain.strides[1:] == (min(stride, AUTO_MAX_STRIDE),) * 2  # wider strides cost anatomy: capped
    assert grain.strides[0] == 1  # 2D-acquired in z: slices independent


@pytest.mark.parametrize("kind", ["gaussian", "rician"])
def test_white_noise_runs_whole(image, kind):
    noisy = noise_kind(kind).fixed(sigma=0.03)(image, np.random.default_rng(1))
    grain = _grain(noisy)
    assert grain.whole and grain.measured == (1, 1, 1)
    assert "white" in grain.describe() and "denoised whole" in grain.describe()


def test_twice_interpolated_noise_is_split(image):
    white = image + np.random.default_rng(2).normal(0, 0.03, image.shape).astype(np.float32)
    noisy = ndimage.zoom(white[:, ::2, ::2], (1, 2, 2), order=1)
    grain = _grain(noisy)
    assert min(grain.measured[1:]) >= 2 and grain.strides == (1, 2, 2)


def test_fbp_ct_noise_is_split_in_two():
    from MedicalDenoiseLib.noise import NoiseContext, SliceSinograms

    hu = np.where(np.hypot(*np.mgrid[-64:64, -64:64]) < 60, 0.0, -1000.0).astype(np.float32)
    stack = np.repeat(hu[None], 4, axis=0)
    noisy = noise_kind("ct-projection").fixed(photons=4e3, kernel="shepp-logan", electronic_sd=10.0).simulate(
        stack, np.random.default_rng(3), NoiseContext(projections=SliceSinograms(stack, 1.0))).noisy
    normalised = (noisy + 1000.0) / 2000.0
    assert _grain(normalised).strides == (1, 2, 2)


def test_speckle_is_split_along_its_long_axis():
    frame = np.full((1, 160, 160), 0.5, np.float32)
    noisy = noise_kind("us-speckle").fixed(axial_psf=2.0, lateral_psf=1.0, dynamic_range_db=50.0, elevational_psf=0.0,
                                           input_log_compressed=True, display_range=(0.0, 1.0)).simulate(
        frame, np.random.default_rng(4)).noisy
    grain = _grain(noisy[0])
    assert grain.measured[1] >= 2 and grain.measured[1] >= grain.measured[2]


def test_unmeasurable_noise_runs_whole():
    flat = np.zeros((4, 40, 40), np.float32)
    assert _grain(flat).whole


def test_sub_lattices_stay_wide_enough_for_the_network(image):
    noisy = noise_kind("mr-kspace").fixed(sigma=0.03, acquired=(1.0, 0.3, 0.3)).simulate(
        image[:, :40, :40], np.random.default_rng(5)).noisy
    assert max(_grain(noisy).measured[1:]) <= 40 // 16


def test_parse_grain():
    assert parse_grain("auto") is None and parse_grain(None) is None
    assert parse_grain("2") == (1, 2, 2) and parse_grain(3) == (1, 3, 3)
    assert parse_grain("1,2,3") == (1, 2, 3) and parse_grain((2, 2, 2)) == (2, 2, 2)
    for bad in ("0", "5", "2,2", "x", "1,2,2,2"):
        with pytest.raises(ValueError, match="grain must be"):
            parse_grain(bad)


def test_user_strides_are_described_as_the_users():
    text = Grain((1, 2, 2), chosen_by="user").describe()
    assert text.startswith("grain set to 1×2×2") and "2×2 sub-grids" in text


def test_faint_white_noise_on_smooth_anatomy_is_not_taken_for_grain():
    """Flat patches of a smooth image with faint white noise read a correlated kernel (anatomy in the fit
    residuals); the sub-lattice's fine-scale noise, no coarser than the grid's, says it is not grain."""
    from MedicalDenoiseLib.io.reading import read_volume
    from MedicalDenoiseLib.io.sample_data import mni152_t1_path

    template = read_volume(mni152_t1_path()).array.astype(np.float32)[60:100, 60:160, 50:150]
    template /= np.percentile(template, 99.5)
    noisy = template + np.random.default_rng(6).normal(0, 0.02, template.shape).astype(np.float32)
    grain = measure_grain(estimate_noise(noisy), noisy)
    assert max(grain.correlation[0][0], grain.correlation[1][0]) > 0.1  # the kernel alone would split it
    assert grain.whole and not grain.confirmed and "read as anatomy" in grain.describe()


def test_a_model_trained_on_grain_runs_whole_under_auto(tiny_model_file):
    """A model that learned scanner grain (autoencoder-v3, gan-v2) would remove it twice on sub-lattices."""
    from MedicalDenoiseLib.inference.denoiser import Denoiser
    from MedicalDenoiseLib.io.volume import Geometry, Volume
    from MedicalDenoiseLib.models.model_files import load_model

    noisy = noise_kind("mr-kspace").fixed(sigma=0.03, acquired=(1.0, 0.5, 0.5)).simulate(
        phantom((20, 64, 64), seed=1), np.random.default_rng(0)).noisy
    volume = Volume(noisy, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), modality="mr")
    model = load_model(tiny_model_file)
    assert Denoiser(model, device="cpu").denoise(volume).grain.strides == (1, 2, 2)
    model.card.noise_kinds = ["gaussian", "mr-kspace"]
    result = Denoiser(model, device="cpu").denoise(volume)
    assert result.grain.whole and result.grain.describe().startswith("model trained on scanner grain")
    assert Denoiser(model, device="cpu").denoise(volume, grain="2").grain.strides == (1, 2, 2)


def test_a_rejected_grain_says_why():
    grain = Grain((1, 1, 1), (1, 1, 1), ((0.4, 0.2), (0.4, 0.2)), None, confirmed=False)
    assert "read as anatomy" in grain.describe() and "denoised whole" in grain.describe()
