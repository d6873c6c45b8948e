"""Projection-domain CT noise: quantum statistics (1/√dose, exp(μd) behind wide anatomy, electronic noise),
the FBP noise power spectrum, thick-slice correlation, field-of-view padding and the projector itself."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import iradon, radon

from MedicalDenoiseLib.noise.ct_projection import CTProjectionNoise
from MedicalDenoiseLib.noise.ct_sinograms import MU_WATER_PER_MM, SliceSinograms
from MedicalDenoiseLib.noise.parallel_beam import backproject, detector_bins, filter_projections, project
from MedicalDenoiseLib.noise.realisation import NoiseContext

PIXEL_MM = 4.0  # coarse pixels keep the phantoms small: 96 px = 384 mm, a body-sized field of view


def disc(diameter_px: float, size: int = 96, slices: int = 8, outside: float = -1000.0) -> np.ndarray:
    """Water disc (0 HU) centred in air, ``(slices, size, size)``."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    slice_ = np.where(np.hypot(y, x) < diameter_px / 2, 0.0, outside).astype(np.float32)
    return np.repeat(slice_[None], slices, axis=0)


def centre_sd(noise: np.ndarray, half: int = 5) -> float:
    c = noise.shape[-1] // 2
    return float(noise[:, c - half: c + half, c - half: c + half].std())


def radial_nps(noise: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean in-plane noise power in rings of radial frequency (cycles/pixel)."""
    power = (np.abs(np.fft.fft2(noise)) ** 2).mean(axis=0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(noise.shape[1]), np.fft.fftfreq(noise.shape[2]), indexing="ij"))
    return np.array([power[(f >= a) & (f < b)].mean() for a, b in zip(edges[:-1], edges[1:])])


def simulate(image, seed=0, **params):
    model = CTProjectionNoise(pixel_size_mm=PIXEL_MM, **params)
    return model.simulate(image, np.random.default_rng(seed))


def test_projector_agrees_with_scikit_image_radon():
    y, x = np.mgrid[:65, :65] - 32
    image = ((np.hypot(y, x) < 28) * 1.0 + (np.hypot(y - 8, x + 10) < 8) * 2.0).astype(np.float32)
    theta = np.arange(90) * 2.0
    reference = radon(image, theta, circle=True).T
    bins = detector_bins(image.shape)
    ours = project(image[None], 90, bins)[0][:, (bins - 65) // 2: (bins - 65) // 2 + 65]
    assert np.sqrt(np.mean((ours - reference) ** 2)) < 0.01 * np.sqrt(np.mean(reference**2))
    assert ours.sum() == pytest.approx(reference.sum(), rel=1e-3)  # each view integrates the whole image


@pytest.mark.parametrize("kernel", ["ramp", "shepp-logan", "cosine"])
def test_filtered_back_projection_matches_scikit_image_iradon(kernel):
    y, x = np.mgrid[:65, :65] - 32
    image = ((np.hypot(y, x) < 28) * 1.0).astype(np.float32)
    theta = np.arange(120) * 1.5
    sinogram = radon(image, theta, circle=True)
    bins = detector_bins(image.shape)
    pad = (bins - 65) // 2
    padded = np.pad(sinogram.T, ((0, 0), (pad, bins - 65 - pad)))
    ours = backproject(filter_projections(padded[None], kernel), image.shape)[0]
    reference = iradon(sinogram, theta, circle=True, filter_name=kernel)
    inside = np.hypot(y, x) < 26
    assert np.abs(ours - reference)[inside].max() < 1e-4
    assert ours[np.hypot(y, x) < 20].mean() == pytest.approx(1.0, abs=0.02)


def test_noise_sd_falls_as_one_over_root_dose_and_is_zero_mean():
    image = disc(60)
    low = simulate(image, photons=1e5, electronic_sd=0.0).noise
    high = simulate(image, photons=4e5, electronic_sd=0.0).noise
    assert high.std() / low.std() == pytest.approx(0.5, rel=0.03)
    assert abs(low.mean()) < 0.02 * low.std()


def test_noise_grows_behind_wide_anatomy_as_exp_of_half_the_path():
    # Every ray through the centre crosses the whole disc: variance ∝ 1/counts = exp(μ·d)/I0.
    wide, narrow = disc(75), disc(25)
    ratio = centre_sd(simulate(wide, photons=1e6).noise) / centre_sd(simulate(narrow, photons=1e6).noise)
    expected = np.exp(MU_WATER_PER_MM * (75 - 25) * PIXEL_MM / 2)
    assert ratio == pytest.approx(expected, rel=0.15)


def test_electronic_noise_adds_its_variance_to_the_photon_counts():
    # Through a 300 mm disc, photons·exp(−μd) = 1e5·e^(−5.85) ≈ 288 ≈ σ_e² for σ_e = 17: variance doubles.
    image = disc(75)
    counts = 1e5 * np.exp(-MU_WATER_PER_MM * 75 * PIXEL_MM)
    without = centre_sd(simulate(image, photons=1e5, electronic_sd=0.0).noise)
    with_electronic = centre_sd(simulate(image, photons=1e5, electronic_sd=np.sqrt(counts)).noise)
    assert with_electronic / without == pytest.approx(np.sqrt(2.0), rel=0.05)


def test_noise_level_matches_a_direct_scikit_image_simulation():
    """Independent route: Gaussian noise of variance 1/counts on scikit-image's full sinogram, iradon."""
    size, views, photons = 64, 100, 1e5
    image = np.full((24, size, size), -1000.0, np.float32)  # air: p = 0, counts = photons·scale everywhere
    ours = simulate(image, photons=photons, electronic_sd=0.0, kernel="shepp-logan", views=views).noise
    counts = photons * PIXEL_MM * 1000 / views  # photons are quoted per 1 mm bin and per 1000 views
    rng = np.random.default_rng(1)
    theta = np.arange(views) * 180.0 / views
    direct = np.stack([iradon(rng.normal(0, 1 / np.sqrt(counts), (size, views)), theta, circle=True,
                              filter_name="shepp-logan") for _ in range(24)])
    direct *= 1000.0 / (MU_WATER_PER_MM * PIXEL_MM)
    assert centre_sd(ours, 12) == pytest.approx(centre_sd(direct, 12), rel=0.08)


def test_noise_power_spectrum_is_a_ramp_times_the_window_squared():
    image = np.full((16, 64, 64), -1000.0, np.float32)
    edges = np.arange(0.025, 0.45, 0.05)
    ramp = radial_nps(simulate(image, kernel="ramp").noise, edges)
    hann = radial_nps(simulate(image, kernel="hann").noise, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    # FBP noise power rises linearly from zero frequency (the ramp), times sinc⁴, the power transfer of the
    # back projection's linear interpolation …
    per_frequency = ramp / (centres * np.sinc(centres) ** 4)
    assert per_frequency.max() / per_frequency.min() < 1.2
    # … and a softer kernel multiplies it by its window squared: Hann 0.5·(1 + cos 2πf).
    window = (0.5 * (1 + np.cos(2 * np.pi * centres))) ** 2
    ratio = (hann / ramp) / (hann[0] / ramp[0])
    np.testing.assert_allclose(ratio, window / window[0], rtol=0.15, atol=0.02)


def test_softer_kernels_give_less_noise_and_slices_are_independent():
    image = np.full((16, 64, 64), -1000.0, np.float32)
    sds = [simulate(image, kernel=k).noise.std() for k in ("ramp", "shepp-logan", "cosine", "hann")]
    assert sds == sorted(sds, reverse=True)
    noise = simulate(image).noise
    assert abs(np.mean(noise * np.roll(noise, 1, axis=0)) / noise.var()) < 0.05


@pytest.mark.parametrize("n", [2, 3])
def test_thick_slice_reformat_correlates_neighbours_as_the_window_overlap(n):
    image = np.full((40, 48, 48), -1000.0, np.float32)
    thin = simulate(image).noise
    thick = simulate(image, slice_average=n).noise
    assert thick.std() == pytest.approx(thin.std() / np.sqrt(n), rel=0.06)
    for lag in range(1, n + 1):
        a, b = thick[:-lag], thick[lag:]
        correlation = float(np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b)))
        assert correlation == pytest.approx((n - lag) / n, abs=0.06)


def test_voxels_outside_the_field_of_view_are_unchanged():
    image = disc(80, outside=-3024.0)
    image[:, 40:50, 40:50] = 300.0
    result = simulate(image)
    outside = image == -3024.0
    assert np.array_equal(result.noisy[outside], image[outside])
    assert result.sigma == pytest.approx(float(result.noise[~outside].std()), rel=1e-6)
    assert result.sigma > 1.0
    assert np.array_equal(result.clean, image)


def test_normalised_units_give_the_same_noise_in_hounsfield_units():
    hu = disc(60)
    normalised = (hu + 1000.0) / 2000.0
    in_hu = simulate(hu, seed=5).noise
    in_units = simulate(normalised, seed=5, hu_offset=-1000.0, hu_per_unit=2000.0).noise
    np.testing.assert_allclose(in_units * 2000.0, in_hu, rtol=1e-3, atol=1e-2)


def test_a_patch_with_the_volumes_projections_has_the_whole_slices_noise():
    volume = disc(75, slices=8)
    sinograms = SliceSinograms(volume, PIXEL_MM)
    model = CTProjectionNoise(photons=3e5, pixel_size_mm=PIXEL_MM)
    patch = volume[2:6, 38:58, 38:58]
    context = NoiseContext(projections=sinograms, origin=(2, 38, 38))
    in_context = model.simulate(patch, np.random.default_rng(0), context)
    whole = model.simulate(volume, np.random.default_rng(1)).noise[2:6, 38:58, 38:58]
    alone = model.simulate(patch, np.random.default_rng(2))  # the patch as its own field of view
    assert in_context.noise.std() == pytest.approx(whole.std(), rel=0.12)
    assert alone.noise.std() < 0.3 * whole.std()


def test_same_seed_same_noise_and_origin_outside_the_volume_is_refused():
    image = disc(40, size=48, slices=2)
    a, b = simulate(image, seed=3).noisy, simulate(image, seed=3).noisy
    assert np.array_equal(a, b)
    assert not np.array_equal(a, simulate(image, seed=4).noisy)
    sinograms = SliceSinograms(image, PIXEL_MM)
    with pytest.raises(ValueError, match="origin"):
        CTProjectionNoise().simulate(image, np.random.default_rng(0),
                                     NoiseContext(projections=sinograms, origin=(1, 0, 0)))


@pytest.mark.parametrize("params, message", [
    ({"photons": 0.0}, "photons must be"), ({"kernel": "bone"}, "kernel must be one of ramp"),
    ({"slice_average": 0}, "slice_average must be"), ({"electronic_sd": -1.0}, "electronic_sd must be"),
])
def test_bad_parameters_name_the_rule(params, message):
    with pytest.raises(ValueError, match=message):
        CTProjectionNoise(**params)


def test_photon_starved_rays_follow_the_clipped_poisson_log():
    # 2 expected counts: the log of Poisson counts clipped to ≥ 1 has a bias (0.094) and an SD (0.558) that a
    # Gaussian count model misses (0.035, 0.514).
    model = CTProjectionNoise(photons=2.0, electronic_sd=0.0)
    drawn = model._log_count_noise(np.zeros((1, 1000, 200), np.float32), 1.0, 1000, np.random.default_rng(0))
    counts = np.arange(0, 60)
    pmf = np.exp(-2.0) * 2.0**counts / np.cumprod(np.concatenate([[1.0], np.arange(1, 60)]))
    values = np.log(2.0) - np.log(np.maximum(counts, 1))
    mean = float((pmf * values).sum())
    assert drawn.mean() == pytest.approx(mean, abs=0.01)
    assert drawn.std() == pytest.approx(float(np.sqrt((pmf * (values - mean) ** 2).sum())), rel=0.02)
