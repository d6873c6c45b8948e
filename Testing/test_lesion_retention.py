"""``evaluation.lesion_retention``: where lesions go, how strong they are, and retention of known filters."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from MedicalDenoiseLib.evaluation.lesion_retention import insert_lesions, measure_retention, retention
from MedicalDenoiseLib.evaluation.reference_free import foreground_mask


def _two_noise_levels(seed: int = 0) -> np.ndarray:
    """128 x 128 at a CT-like level with a mild ramp: noise SD 1 on the left half, 3 on the right."""
    rng = np.random.default_rng(seed)
    sd = np.where(np.arange(128)[None, :] < 64, 1.0, 3.0)
    return 1000 + 0.1 * np.arange(128)[None, :] + rng.normal(0, 1, (128, 128)) * sd


def _direct_local_sd(image: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    """Sample SD over every box, written out: mirrored edges (scipy's "reflect") and explicit windows."""
    padded = np.pad(image, [(b // 2, b // 2) for b in box], mode="symmetric")
    windows = sliding_window_view(padded, box)
    return windows.reshape(image.shape + (-1,)).std(axis=-1, ddof=1)


def _direct_flat(image: np.ndarray, box: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.percentile(image, [1, 99])
    foreground = foreground_mask((image - low) / (high - low))
    assert foreground.mean() > 0.5  # these images are all body, so the fallback is not what is tested
    local_sd = _direct_local_sd(image, box)
    return local_sd, foreground & (local_sd <= np.quantile(local_sd[foreground], 0.2))


def _blur(sigma: float):
    return lambda image: ndimage.gaussian_filter(image, sigma)


@pytest.mark.parametrize("shape", [(128, 128), (24, 64, 64)])
def test_identity_keeps_everything(shape):
    image = 1000 + np.random.default_rng(1).normal(0, 10, shape)
    assert measure_retention(lambda x: x, image, np.random.default_rng(2)) == pytest.approx(1.0, abs=1e-6)


def test_strong_blur_erases_more_than_mild_blur():
    image = _two_noise_levels()
    kept = {sigma: measure_retention(_blur(sigma), image, np.random.default_rng(3)) for sigma in (0.5, 1, 3)}
    assert kept[3] < 0.5
    assert 0.6 < kept[0.5] < 0.995
    assert kept[3] < kept[1] < kept[0.5]


def test_strong_blur_erases_thin_3d_lesions():
    image = 500 + np.random.default_rng(4).normal(0, 10, (24, 64, 64))
    assert measure_retention(_blur(3), image, np.random.default_rng(5)) < 0.5


def test_lesions_sit_in_the_flattest_fifth_apart_and_away_from_the_border():
    image = _two_noise_levels()
    lesions = insert_lesions(image, count=12, rng=np.random.default_rng(6))
    _, flat = _direct_flat(image, (5, 5))
    centres = lesions.centres
    assert centres.shape == (12, 2)
    assert flat[tuple(centres.T)].all()
    assert (centres[:, 1] < 64).all()  # the quieter half
    assert (centres >= 12).all() and (centres <= 127 - 12).all()  # 3 radii of 4 voxels
    distances = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1)) / 4
    assert distances[~np.eye(12, dtype=bool)].min() >= 4
    # Half-peak cores of radius-4 blobs: the 21 voxels with dy² + dx² <= 8 ln 2.
    assert lesions.cores.sum() == 12 * 21 and ndimage.label(lesions.cores)[1] == 12


def test_amplitude_is_contrast_times_median_local_sd_of_the_flat_region():
    image = _two_noise_levels(seed=7)
    lesions = insert_lesions(image, contrast=2.0, rng=np.random.default_rng(8))
    local_sd, flat = _direct_flat(image, (5, 5))
    assert lesions.amplitude == pytest.approx(2.0 * np.median(local_sd[flat]), rel=1e-6)
    assert lesions.image.dtype == np.float32 and lesions.lesion_map.dtype == np.float32
    np.testing.assert_allclose(lesions.lesion_map, lesions.image - image.astype(np.float32), atol=1e-9)
    np.testing.assert_allclose(lesions.lesion_map[tuple(lesions.centres.T)], lesions.amplitude, rtol=1e-4)


def test_3d_lesions_follow_the_default_thick_slice_radii():
    image = 500 + np.random.default_rng(9).normal(0, 10, (24, 64, 64))
    lesions = insert_lesions(image, rng=np.random.default_rng(10))
    local_sd, flat = _direct_flat(image, (3, 5, 5))
    assert lesions.amplitude == pytest.approx(1.5 * np.median(local_sd[flat]), rel=1e-6)
    assert len(lesions.centres) == 12 and flat[tuple(lesions.centres.T)].all()
    assert (lesions.centres[:, 0] >= 5).all() and (lesions.centres[:, 0] <= 18).all()  # ceil(3 x 1.5)
    # radii (1.5, 3, 3): the half-peak core is one slice deep and 9 pixels in-plane.
    assert lesions.cores.sum() == 12 * 9
    assert np.unique(np.argwhere(lesions.cores)[:, 0]).tolist() == sorted(set(lesions.centres[:, 0].tolist()))


def test_same_seed_same_lesions_other_seed_other_lesions():
    image = _two_noise_levels()
    first = insert_lesions(image, rng=np.random.default_rng(11))
    again = insert_lesions(image, rng=np.random.default_rng(11))
    other = insert_lesions(image, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(first.centres, again.centres)
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.centres, other.centres)


def test_fewer_lesions_when_the_image_cannot_hold_them():
    image = 100 + np.random.default_rng(13).normal(0, 1, (48, 48))
    lesions = insert_lesions(image, count=50, rng=np.random.default_rng(14))
    assert 1 <= len(lesions.centres) < 50


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no local variation"):
        insert_lesions(np.full((64, 64), 3.0))
    with pytest.raises(ValueError, match="border"):
        insert_lesions(np.random.default_rng(15).normal(size=(20, 20)))
    with pytest.raises(ValueError, match="radii"):
        insert_lesions(np.random.default_rng(16).normal(size=(64, 64)), radii=(1.5, 3, 3))
    lesions = insert_lesions(_two_noise_levels())
    with pytest.raises(ValueError, match="shape"):
        retention(lesions.image[:-1], lesions.image[:-1], lesions)
