"""``evaluation.seams``: the seam score is ~1 without a grid and finds period-2/3/4 grids, on seeded images."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from MedicalDenoiseLib.evaluation.seams import in_plane_images, seam_ratios, seam_score


def _worst(ratios: dict) -> tuple[int, tuple[int, int]]:
    return max(ratios, key=ratios.get)


def test_white_noise_scores_near_one():
    rng = np.random.default_rng(0)
    assert 0.7 < seam_score(rng.normal(0, 5.0, (16, 128, 128))) < 1.4


def test_faint_checkerboard_scores_clearly_higher_than_noise():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:128, :128]
    noise = rng.normal(0, 1.0, (128, 128))
    with_grid = noise + 0.1 * (-1.0) ** (x + y)  # 10 % of the noise SD
    assert seam_score(with_grid) > 3
    assert seam_score(with_grid) > 2 * seam_score(noise)
    assert _worst(seam_ratios(with_grid)) == (2, (64, 64))


def test_period_four_modulation_along_x_is_named_as_the_worst():
    rng = np.random.default_rng(2)
    field = ndimage.gaussian_filter(rng.normal(size=(160, 160)), 4)
    field = 1 + 0.5 * field / field.std()
    x = np.arange(160)[None, :]
    image = field * (1 + 0.05 * np.cos(2 * np.pi * x / 4)) + rng.normal(0, 0.05, (160, 160))
    ratios = seam_ratios(image)
    assert _worst(ratios) == (4, (0, 32))
    assert ratios[(4, (0, 32))] > 5
    assert ratios[(4, (32, 0))] < 2  # the grid runs along x only


def test_period_three_grid_on_a_blurred_field_scores_high():
    rng = np.random.default_rng(3)
    blurred = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 2)
    # Some noise is left, as in any denoiser's output; with none, the bins near Nyquist hold only round-off
    # and the filter's truncation, whose ratios mean nothing.
    blurred += rng.normal(0, 0.01 * blurred.std(), blurred.shape)
    assert seam_score(blurred) < 1.8
    tile = rng.normal(size=(3, 3))  # a 3 x 3 sub-lattice offset, as pixel-shuffle leaves it
    grid = 0.02 * blurred.std() * np.tile(tile, (43, 43))[:128, :128]
    ratios = seam_ratios(blurred + grid)
    assert _worst(ratios)[0] == 3
    assert seam_score(blurred + grid) > 10


def test_edges_that_do_not_match_across_the_crop_are_not_a_grid():
    # A ramp jumps between the crop's top and bottom rows; untapered, that leaks along ky and scored ~5.
    rng = np.random.default_rng(4)
    ramp = 100 * np.arange(128)[:, None] / 128 + ndimage.gaussian_filter(rng.normal(0, 10, (128, 128)), 1.5)
    assert seam_score(ramp) < 1.4


def test_only_the_central_crop_is_measured():
    rng = np.random.default_rng(5)
    y, x = np.mgrid[:256, :256]
    outside = (np.abs(y - 127.5) > 70) | (np.abs(x - 127.5) > 70)
    image = rng.normal(size=(8, 256, 256)) + 0.3 * (-1.0) ** (x + y) * outside
    assert seam_score(image) < 1.4


def test_short_axis_uses_its_whole_length_and_keys_follow_it():
    rng = np.random.default_rng(6)
    ratios = seam_ratios(rng.normal(size=(4, 40, 200)))
    assert set(ratios) == {(2, (0, 64)), (2, (20, 0)), (2, (20, 64)), (3, (0, 43)), (3, (13, 0)),
                           (3, (13, 43)), (4, (0, 32)), (4, (10, 0)), (4, (10, 32))}


@pytest.mark.parametrize("shape", [(31, 64), (64, 31), (3, 20, 128)])
def test_images_under_32_pixels_are_refused(shape):
    with pytest.raises(ValueError, match="at least 32"):
        seam_score(np.random.default_rng(7).normal(size=shape))


def test_a_stack_averages_spectra_so_it_is_steadier_than_its_images():
    rng = np.random.default_rng(8)
    stack = rng.normal(size=(16, 128, 128))
    singles = [seam_score(image) for image in stack]
    assert seam_score(stack[0]) == seam_score(stack[:1])
    assert abs(seam_score(stack) - 1) < np.median(np.abs(np.array(singles) - 1))


def test_constant_images_have_no_score():
    assert np.isnan(seam_score(np.ones((64, 64))))


def test_in_plane_images_spreads_slices_and_wraps_a_single_image():
    volume = np.arange(100)[:, None, None] * np.ones((1, 40, 40))
    picked = in_plane_images(volume, max_images=32)
    slices = picked[:, 0, 0]
    assert picked.shape == (32, 40, 40)
    assert np.all(np.diff(slices) >= 3) and slices[0] > 0 and slices[-1] < 99
    assert in_plane_images(volume[:10]).shape == (10, 40, 40)
    assert in_plane_images(volume[0]).shape == (1, 40, 40)
    with pytest.raises(ValueError):
        in_plane_images(volume, max_images=0)
