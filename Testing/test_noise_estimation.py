"""Blind noise estimation: the full SD of white, Rician, FBP-shaped CT, zero-filled MR k-space (one coil or
eight), ultrasound speckle (fully developed or from few scatterers) and projection-domain CT noise on
structured phantoms and on the MNI152 template, with zeroed backgrounds and CT padding."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from scipy import ndimage

from conftest import phantom
from MedicalDenoiseLib.estimation.flat_patches import measure_patches, prepare_slices
from MedicalDenoiseLib.estimation.noise_estimation import (
    NoiseEstimate, estimate_fine_scale_sigma, estimate_noise, estimate_noise_sigma,
)
from MedicalDenoiseLib.estimation.rician import rician_variance_factor
from MedicalDenoiseLib.noise.ct_projection import CTProjectionNoise
from MedicalDenoiseLib.noise.image_domain import CTQuantumNoise, GaussianNoise, RicianNoise
from MedicalDenoiseLib.noise.mr_kspace import MRKSpaceNoise
from MedicalDenoiseLib.noise.ultrasound_speckle import UltrasoundSpeckle

SHAPES = {"2d": (160, 160), "3d": (10, 96, 96)}


def structured_phantom(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An elliptical body with ellipses/ellipsoids of other intensities, fine texture in some, small dots, a
    smooth bias field and partial-volume edges; 0 outside the body. Returns ``(image in [0, ~1.2], body)``."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (grids[-2] / 0.9) ** 2 + (grids[-1] / 0.85) ** 2 < 1
    image = np.full(shape, 0.4)
    for _ in range(7):
        centre, radii = rng.uniform(-0.5, 0.5, len(shape)), rng.uniform(0.1, 0.3, len(shape))
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) < 1
        image[inside] = rng.uniform(0.1, 1.0)
        if rng.uniform() < 0.4:  # fine texture (tissue), a few per cent of the range
            texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
            image[inside] += (0.02 * texture / texture.std())[inside]
    for _ in range(6):  # vessels / small lesions
        centre = rng.uniform(-0.6, 0.6, len(shape))
        image[sum((g - c) ** 2 for g, c in zip(grids, centre)) < 0.03**2] = rng.uniform(0.6, 1.0)
    image = ndimage.gaussian_filter(image, 1.0)
    bias = 1 + 0.2 * grids[-1] + 0.15 * grids[-2] ** 2
    return np.where(body, image * bias, 0.0), np.broadcast_to(body, shape)


def _noisy(model: str, level: float, shape: tuple[int, ...], rng: np.random.Generator):
    """``(noisy image, true noise SD)`` for one noise model at one level (fraction of the range).

    The true SD is the model's SD where it is Gaussian (k-space MR: ``params["expected_sd"]``, the SD where
    the signal is strong), or the realised SD of noisy − clean where the simulation gives nothing else. For
    eight coils, whose noise grows towards the middle, it is the RMS of the simulation's SD map over the body.
    """
    image, body = structured_phantom(shape)
    full = np.where(body, image, 0.4)  # additive models: the whole field is tissue
    if model == "gaussian":
        return GaussianNoise(level)(full, rng), level
    if model == "rician":  # dark background around the body: Rayleigh
        return RicianNoise(level)(image, rng), level
    if model.startswith("ct-fbp"):
        noisy = CTQuantumNoise(level, cutoff=float(model.split("-")[-1]))(full, rng)
        return noisy, float(np.std(noisy - full))
    if model.startswith("mr-coils"):  # 8 coils, root-sum-of-squares: non-central chi, varying in space
        fraction = float(model.split("-")[-1])
        kspace = MRKSpaceNoise(level, acquired=(fraction, fraction), coils=8)
        local_sd = np.broadcast_to(kspace.expected_sd(shape), shape)
        return kspace.simulate(image, rng).noisy, float(np.sqrt(np.mean(local_sd[body] ** 2)))
    if model.startswith("mr-kspace"):  # central fraction acquired per in-plane axis, zero-filled, one coil
        fraction = float(model.split("-")[-1])
        result = MRKSpaceNoise(level, acquired=(fraction, fraction)).simulate(image, rng)
        return result.noisy, result.params["expected_sd"]
    if model.startswith("us-speckle"):  # log-compressed B-mode; the level is the lateral grain (voxels)
        result = UltrasoundSpeckle(axial_psf=1.0, lateral_psf=level).simulate(0.15 + 0.7 * full, rng)
        return result.noisy, result.sigma
    if model.startswith("us-sparse"):  # the same with this many scatterers per resolution cell
        scatterers = float(model.split("-")[-1])
        speckle = UltrasoundSpeckle(axial_psf=1.0, lateral_psf=level, scatterers_per_cell=scatterers)
        result = speckle.simulate(0.15 + 0.7 * full, rng)
        return result.noisy, result.sigma
    raise ValueError(model)


CASES = [("gaussian", 0.005), ("gaussian", 0.15), ("rician", 0.01), ("rician", 0.15),
         ("ct-fbp-0.25", 0.02), ("ct-fbp-0.5", 0.1), ("mr-kspace-0.45", 0.03), ("mr-kspace-0.7", 0.1),
         ("mr-kspace-1.0", 0.05), ("us-speckle", 1.0), ("us-speckle", 2.5),
         # Gibbs ringing of zero-filled k-space at the hard edge of the body, at low noise
         ("mr-kspace-0.45", 0.01), ("mr-kspace-0.5", 0.01), ("mr-kspace-0.7", 0.01), ("mr-kspace-0.7", 0.005),
         # eight coils: noise up to 1.5× stronger in the middle, non-central chi in dark tissue
         ("mr-coils-1.0", 0.01), ("mr-coils-1.0", 0.1), ("mr-coils-0.45", 0.1),
         # speckle from one scatterer per resolution cell: spiky, clipped, correlated beyond a 16-voxel patch
         ("us-sparse-1", 2.5), ("us-sparse-1", 3.5)]


@pytest.mark.parametrize("dims", sorted(SHAPES))
@pytest.mark.parametrize("model,level", CASES)
def test_full_sd_within_15_percent(model, level, dims):
    seed = zlib.crc32(f"{model} {level} {dims}".encode())
    noisy, true_sd = _noisy(model, level, SHAPES[dims], np.random.default_rng(seed))
    assert estimate_noise_sigma(noisy) == pytest.approx(true_sd, rel=0.15)


@pytest.mark.xfail(strict=True, reason="Gibbs ringing from the body's one-voxel edge covers tissue and background "
                   "alike at 0.25 % noise: estimate/true 1.25-1.33 over 5 seeds on the 96² volume (1.10-1.14 in 2D)")
def test_zero_filled_mr_at_the_lowest_noise():
    noisy, true_sd = _noisy("mr-kspace-0.5", 0.005, SHAPES["3d"], np.random.default_rng(10))
    assert estimate_noise_sigma(noisy) == pytest.approx(true_sd, rel=0.15)


@pytest.mark.parametrize("level", [2.5, 3.5])
def test_speckle_from_half_a_scatterer_per_cell_in_a_volume(level):
    seed = zlib.crc32(f"us-sparse-0.5 {level}".encode())
    noisy, true_sd = _noisy("us-sparse-0.5", level, SHAPES["3d"], np.random.default_rng(seed))
    assert estimate_noise_sigma(noisy) == pytest.approx(true_sd, rel=0.15)


@pytest.mark.xfail(strict=True, reason="half a scatterer per cell in one 160² frame: estimate/true 0.82-0.97 over "
                   "12 seeds, 0.68 on some (81 wide patches of spiky speckle, or too few flat to try them)")
def test_speckle_from_half_a_scatterer_per_cell_in_one_frame():
    ratios = [estimate_noise_sigma(noisy) / true_sd for noisy, true_sd in
              (_noisy("us-sparse-0.5", 2.5, SHAPES["2d"], np.random.default_rng(seed)) for seed in range(6))]
    assert all(abs(ratio - 1) <= 0.15 for ratio in ratios)


@pytest.fixture(scope="module")
def mni152():
    """The ``make demo`` input: the MNI152 T1 template in normalised units (brain in a zero background)."""
    from MedicalDenoiseLib.inference.normalization import IntensityNormalizer
    from MedicalDenoiseLib.io.reading import read_volume
    from MedicalDenoiseLib.io.sample_data import mni152_t1_path

    pytest.importorskip("nilearn")
    clean = read_volume(mni152_t1_path()).array.astype(np.float32)
    return clean / IntensityNormalizer.fit(clean, "mr").scale


@pytest.mark.parametrize("dims,sigma", [("3d", 0.04), ("2d", 0.01), ("2d", 0.1)])
def test_mr_of_a_whole_brain_in_its_dark_background(mni152, dims, sigma):
    """The demo's acquisition (65 % of k-space in-plane, zero-filled, one coil): a 1 mm brain has no flat
    patch at these levels, so the Rayleigh background around it measures the noise."""
    image = mni152 if dims == "3d" else mni152[mni152.shape[0] // 2]
    result = MRKSpaceNoise(sigma, acquired=(1.0, 0.65, 0.65)).simulate(image, np.random.default_rng(11))
    assert estimate_noise_sigma(result.noisy) == pytest.approx(result.params["expected_sd"], rel=0.15)


@pytest.mark.parametrize("coils,dof", [(1, 2.0), (8, 16.0)])
def test_background_gives_the_coils_and_the_noise(coils, dof):
    from MedicalDenoiseLib.estimation.noise_background import find_background  # (benchmarks import this file)

    image, _ = structured_phantom(SHAPES["2d"])
    kspace = MRKSpaceNoise(0.02, coils=coils)
    background = find_background(measure_patches(prepare_slices(kspace(image, np.random.default_rng(12))[None], 1)))
    assert background is not None and background.dof == pytest.approx(dof, rel=0.15)
    outside = kspace.expected_sd(SHAPES["2d"])[0, 0]  # the SD map at the corner, in the background
    assert background.sd == pytest.approx(outside, rel=0.1)


@pytest.mark.parametrize("model,level", [("gaussian", 0.05), ("us-speckle", 2.0), ("us-sparse-0.5", 2.0)])
def test_no_background_without_chi_distributed_dark_regions(model, level):
    from MedicalDenoiseLib.estimation.noise_background import find_background

    noisy, _ = _noisy(model, level, SHAPES["2d"], np.random.default_rng(13))
    noisy = np.clip(noisy, 0.0, None) if model == "gaussian" else noisy  # no negatives: a magnitude candidate
    candidates = measure_patches(prepare_slices(noisy[None], 1))
    assert candidates.magnitude and find_background(candidates) is None


def test_non_central_chi_variance_of_eight_coils():
    """ξ(mean/SD) for 16 degrees of freedom against a sampled RSS magnitude at a few signal levels."""
    rng = np.random.default_rng(14)
    for signal in (3.0, 6.0, 12.0):
        channels = rng.standard_normal((16, 200_000))
        channels[0] += signal
        magnitude = np.sqrt((channels**2).sum(axis=0))
        measured = magnitude.var()
        predicted = rician_variance_factor(magnitude.mean() / magnitude.std(), dof=16)
        assert predicted == pytest.approx(measured, rel=0.03)
    assert rician_variance_factor(1.913) == pytest.approx(0.429, abs=1e-3)


@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_correlated_noise_is_not_underestimated_like_the_fine_scale_estimate(dims):
    noisy, true_sd = _noisy("mr-kspace-0.45", 0.05, SHAPES[dims], np.random.default_rng(1))
    estimate = estimate_noise(noisy)
    assert estimate.fine_scale_sigma < 0.75 * true_sd  # the high-pass estimate misses most of it …
    assert estimate.sigma == pytest.approx(true_sd, rel=0.15)  # … the full estimate does not
    assert estimate.correlated and min(estimate.correlation) > 0.4
    assert estimate.magnitude


def test_white_noise_reads_as_uncorrelated_in_plane_and_through_plane():
    noisy, _ = _noisy("gaussian", 0.05, SHAPES["3d"], np.random.default_rng(2))
    estimate = estimate_noise(noisy)
    assert max(abs(c) for c in estimate.correlation) < 0.1 and not estimate.correlated
    assert abs(estimate.correlation_z) < 0.1
    assert estimate.sigma == pytest.approx(estimate.fine_scale_sigma, rel=0.1)
    assert estimate.kernel is not None and estimate.kernel[estimate.kernel.shape[0] // 2].max() == pytest.approx(1.0)


def test_correlation_between_slices_is_measured():
    image, _ = structured_phantom((12, 96, 96))
    white = np.random.default_rng(3).standard_normal((14, 96, 96))
    thick = (white[:-2] + white[1:-1] + white[2:]) / 3 * 0.05  # thick-slice reformat: lag-1 correlation 2/3
    estimate = estimate_noise(np.where(image > 0, image, 0.4) + thick)
    assert estimate.correlation_z == pytest.approx(2 / 3, abs=0.15)
    assert estimate.sigma == pytest.approx(0.05 / np.sqrt(3), rel=0.15)
    assert estimate_noise(image[0] + thick[0]).correlation_z is None


@pytest.mark.parametrize("model,level", [("gaussian", 0.02), ("rician", 0.05), ("mr-kspace-0.6", 0.05)])
def test_zeroed_background_is_ignored(model, level):
    """Skull-stripped MR: exact zeros outside the brain carry no noise and must not pull the level down."""
    image, body = structured_phantom(SHAPES["3d"])
    noisy, true_sd = _noisy(model, level, SHAPES["3d"], np.random.default_rng(4))
    stripped = np.where(ndimage.binary_erosion(body, iterations=2), noisy, 0.0)
    assert (stripped == 0).mean() > 0.25
    assert estimate_noise_sigma(stripped) == pytest.approx(true_sd, rel=0.15)


@pytest.mark.parametrize("padding", [-1024.0, -3024.0, -32768.0])
@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_ct_padding_outside_the_field_of_view_is_ignored(padding, dims):
    shape = SHAPES[dims]
    image, _ = structured_phantom(shape)
    hu = -1000.0 + 1100.0 * np.where(image > 0, image, 0.9)  # air-to-bone values, body at soft tissue
    noisy = CTQuantumNoise(25.0, cutoff=0.35)(hu, np.random.default_rng(5))
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[-2:]], indexing="ij")
    field = np.broadcast_to(grids[0] ** 2 + grids[1] ** 2 < 0.95, shape)
    padded = np.where(field, noisy, padding)
    assert estimate_noise_sigma(padded) == pytest.approx(float(np.std((noisy - hu)[field])), rel=0.15)


def _ct_body(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """HU phantom: soft-tissue body with organs and a bone ring in air; −3024 outside the field of view."""
    image, body = structured_phantom(shape)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[-2:]], indexing="ij")
    hu = np.where(body, -80.0 + 200.0 * image, -1000.0)
    ring = body & ~((grids[0] / 0.82) ** 2 + (grids[1] / 0.77) ** 2 < 1)
    hu = np.where(ring, 700.0, hu)
    field = np.broadcast_to(grids[0] ** 2 + grids[1] ** 2 < 0.97, shape)
    soft = ndimage.binary_erosion(body & ~ring & (np.abs(hu) < 200), np.ones((1,) * (len(shape) - 2) + (5, 5)))
    return np.where(field, hu, -3024.0).astype(np.float32), soft


@pytest.mark.parametrize("shape,photons,kernel", [((96, 96), 3e3, "hann"), ((4, 96, 96), 3e4, "ramp")])
def test_projection_domain_ct_noise_matches_the_soft_tissue_sd(shape, photons, kernel):
    """Reduced-dose CT noise is strongest behind dense anatomy; the estimate follows the noise in soft
    tissue, where CT noise is measured (the field of view's SD also averages in the quieter air)."""
    hu, soft = _ct_body(shape)
    result = CTProjectionNoise(photons=photons, kernel=kernel, pixel_size_mm=2.0).simulate(hu, np.random.default_rng(6))
    true_sd = float(np.std(result.noise[soft]))
    assert true_sd > 5.0
    assert estimate_noise_sigma(result.noisy) == pytest.approx(true_sd, rel=0.15)


def test_units_follow_the_image():
    noisy = phantom((20, 48, 48)) + np.random.default_rng(7).normal(0, 0.04, (20, 48, 48))
    assert estimate_noise_sigma(noisy * 1000) == pytest.approx(1000 * estimate_noise_sigma(noisy), rel=1e-6)


def test_constant_tiny_2d_and_nonfinite_inputs():
    assert estimate_noise_sigma(np.full((5, 6, 7), 3.0)) == 0.0
    assert estimate_noise_sigma(np.zeros((3, 2, 7))) == 0.0
    assert estimate_noise(np.full((40, 40), 2.0)) == NoiseEstimate(0.0, 0.0)
    tiny = np.random.default_rng(8).normal(0, 0.2, (9, 9))  # too small for patches: the fine-scale estimate
    assert estimate_noise_sigma(tiny) == estimate_fine_scale_sigma(tiny) > 0
    image2d = np.random.default_rng(9).normal(0, 0.2, (64, 64))
    assert estimate_noise_sigma(image2d) == pytest.approx(0.2, rel=0.1)
    with_nan = image2d.copy()
    with_nan[10, 10] = np.nan
    with_nan[20, 20] = np.inf
    assert estimate_noise_sigma(with_nan) == pytest.approx(0.2, rel=0.1)
    with pytest.raises(ValueError, match="2D or 3D"):
        estimate_noise_sigma(np.zeros((2, 3, 4, 5)))


def test_fine_scale_estimate_is_unchanged_for_the_shipped_models():
    """The shipped models were trained on this exact number; it must not drift."""
    rng = np.random.default_rng(7)
    image = rng.normal(0.0, 0.05, (6, 40, 40)) + np.linspace(0, 1, 40)
    assert estimate_fine_scale_sigma(image) == 0.04929804539038832
    assert estimate_noise(image).fine_scale_sigma == estimate_fine_scale_sigma(image)


# The noise map: flat-patch variances scatter ~20 % each (chi-square over tens of effective samples) and a
# smooth 6-8 term surface fitted to hundreds of them is good to a few per cent; its level is set like the
# global estimate, good to ±10 %. So the map must follow the simulation's local SD over the object within 10 %
# at the median voxel and 20 % at the 90th percentile.
def _map_error(estimated: np.ndarray, true: np.ndarray, where: np.ndarray) -> tuple[float, float]:
    error = np.abs(estimated[where] / true[where] - 1.0)
    return float(np.median(error)), float(np.quantile(error, 0.9))


@pytest.mark.parametrize("dims", sorted(SHAPES))
@pytest.mark.parametrize("level", [0.05, 0.1])
def test_noise_map_follows_eight_coils(dims, level):
    from MedicalDenoiseLib.estimation.noise_map import estimate_noise_map

    shape = SHAPES[dims]
    image, body = structured_phantom(shape)
    kspace = MRKSpaceNoise(level, coils=8)
    noise_map = estimate_noise_map(kspace(image, np.random.default_rng(15)))
    assert noise_map.shape == shape and noise_map.dtype == np.float32
    median, p90 = _map_error(noise_map, np.broadcast_to(kspace.expected_sd(shape), shape), body)
    assert median <= 0.1 and p90 <= 0.2


def test_noise_map_follows_ct_noise_behind_dense_anatomy():
    """Projection-domain CT noise is strongest where the rays cross the most bone; the truth is the local SD
    of the simulated noise in soft tissue (Gaussian window of 6 voxels)."""
    from MedicalDenoiseLib.estimation.noise_map import estimate_noise_map

    hu, soft = _ct_body((160, 160))
    result = CTProjectionNoise(photons=1e4, kernel="hann", pixel_size_mm=2.0).simulate(hu, np.random.default_rng(16))
    noise = result.noise.astype(np.float64)
    weight = np.maximum(ndimage.gaussian_filter(soft * 1.0, 6.0), 1e-12)
    local_sd = np.sqrt(ndimage.gaussian_filter(noise**2 * soft, 6.0) / weight)
    noise_map = estimate_noise_map(result.noisy)
    median, p90 = _map_error(noise_map, local_sd, soft)
    assert median <= 0.1 and p90 <= 0.2
    low, high = np.quantile(noise_map[soft], [0.05, 0.95])
    assert high > 1.3 * low  # it does vary, as the noise does (×1.7 here)


def test_noise_map_of_stationary_noise_is_flat():
    from MedicalDenoiseLib.estimation.noise_map import estimate_noise_map

    image, body = structured_phantom(SHAPES["3d"])
    noise_map = estimate_noise_map(GaussianNoise(0.05)(np.where(body, image, 0.4), np.random.default_rng(17)))
    median, p90 = _map_error(noise_map, np.full(SHAPES["3d"], 0.05), np.ones(SHAPES["3d"], bool))
    assert median <= 0.05 and p90 <= 0.1
    assert not estimate_noise_map(np.full((40, 40), 2.0)).any()
