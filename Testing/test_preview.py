"""Tests of MedicalDenoiseLib.evaluation.preview: PNG comparisons written through SimpleITK."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedicalDenoiseLib.errors import OutputError
from MedicalDenoiseLib.evaluation.preview import GAP_PX, comparison_grid_png, comparison_labels, comparison_png, middle_slice


def read_png(path) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 1
    return sitk.GetArrayFromImage(image)


@pytest.fixture
def panels() -> list[tuple[str, np.ndarray]]:
    """noisy | denoised | residual | clean, 5 x 12 x 16 volumes; the residual is 0 in its left half."""
    rng = np.random.default_rng(3)
    clean = np.tile(np.linspace(0.0, 1.0, 16), (5, 12, 1))
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    denoised = noisy.copy()
    denoised[..., 8:] = clean[..., 8:]
    return [("noisy", noisy), ("denoised", denoised), ("residual", noisy - denoised), ("clean", clean)]


def test_middle_slice():
    volume = np.arange(5 * 3 * 4).reshape(5, 3, 4)
    np.testing.assert_array_equal(middle_slice(volume), volume[2])
    np.testing.assert_array_equal(middle_slice(volume[:1]), volume[0])
    np.testing.assert_array_equal(middle_slice(volume[0]), volume[0])
    with pytest.raises(ValueError, match="2D"):
        middle_slice(np.zeros(4))


def test_png_layout_and_residual_grey(tmp_path, panels):
    path = comparison_png(tmp_path / "compare.png", panels)
    assert path == tmp_path / "compare.png"
    pixels = read_png(path)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (12, 4 * 16 + 3 * GAP_PX)
    gaps = [pixels[:, 16 * (i + 1) + GAP_PX * i: (16 + GAP_PX) * (i + 1)] for i in range(3)]
    assert all((gap == 0).all() for gap in gaps)
    residual = pixels[:, 2 * (16 + GAP_PX): 2 * (16 + GAP_PX) + 16]
    assert set(np.unique(residual[:, :8])) <= {127, 128}  # zero residual is mid-grey
    assert residual[:, 8:].std() > 10  # the removed noise is visible beside it
    assert 0 < residual[:, 8:].mean() < 255


def test_image_panels_share_the_window(tmp_path, panels):
    pixels = read_png(comparison_png(tmp_path / "compare.png", panels))
    clean_tile = pixels[:, 3 * (16 + GAP_PX):]
    denoised_tile = pixels[:, 16 + GAP_PX: 2 * 16 + GAP_PX]
    # The right half of "denoised" equals "clean", so with one shared window the pixels agree.
    np.testing.assert_array_equal(denoised_tile[:, 8:], clean_tile[:, 8:])


def test_explicit_window_clips(tmp_path):
    image = np.array([[0.0, 0.5, 1.0, 2.0]])
    pixels = read_png(comparison_png(tmp_path / "w.png", [("image", image)], window=(0.0, 1.0)))
    np.testing.assert_array_equal(pixels, [[0, 128, 255, 255]])
    with pytest.raises(ValueError, match="window"):
        comparison_png(tmp_path / "bad.png", [("image", image)], window=(1.0, 1.0))


def test_2d_panels_of_different_heights(tmp_path):
    rng = np.random.default_rng(0)
    tall, short = rng.random((10, 6)), rng.random((4, 5))
    pixels = read_png(comparison_png(tmp_path / "two.png", [("a", tall), ("b", short)]))
    assert pixels.shape == (10, 6 + GAP_PX + 5)
    assert (pixels[4:, 6 + GAP_PX:] == 0).all()  # below the short panel: background


def test_no_temporary_file_left_and_overwrite(tmp_path, panels):
    comparison_png(tmp_path / "compare.png", panels)
    comparison_png(str(tmp_path / "compare.png"), panels[:2])
    assert [p.name for p in tmp_path.iterdir()] == ["compare.png"]
    assert read_png(tmp_path / "compare.png").shape == (12, 2 * 16 + GAP_PX)


def test_bad_paths_and_panels(tmp_path, panels):
    with pytest.raises(ValueError, match=r"\.png"):
        comparison_png(tmp_path / "compare.jpg", panels)
    with pytest.raises(ValueError, match="at least one"):
        comparison_png(tmp_path / "compare.png", [])
    with pytest.raises(OutputError, match="cannot write"):
        comparison_png(tmp_path / "missing" / "compare.png", panels)


def test_comparison_labels(panels):
    assert comparison_labels(panels) == "noisy | denoised | residual | clean"


def test_grid_puts_residuals_under_outputs_in_one_shared_window(tmp_path, panels):
    (_, noisy), (_, denoised), _, (_, clean) = panels
    half_smoothed = noisy.copy()
    half_smoothed[..., :8] = clean[..., :8]  # removed the noise in the left half only
    top = [("noisy", noisy), ("denoised", denoised), ("half", half_smoothed), ("clean", clean)]
    bottom = [("residual noise", noisy - clean), ("residual denoised", noisy - denoised),
              ("residual half", noisy - half_smoothed), None]
    path = comparison_grid_png(tmp_path / "grid.png", [top, bottom], residual_half_width=0.3)
    pixels = read_png(path)
    assert pixels.shape == (2 * 12 + GAP_PX, 4 * 16 + 3 * GAP_PX)
    assert (pixels[12: 12 + GAP_PX] == 0).all()  # the gap between the rows
    row2 = pixels[12 + GAP_PX:]
    tile = lambda column: row2[:, column * (16 + GAP_PX): column * (16 + GAP_PX) + 16]  # noqa: E731
    # One shared window: "denoised" removed noise only in its right half, "half" only in its left half, so
    # each shows mid-grey where it removed nothing and the same noise pixels where it removed it.
    assert set(np.unique(tile(1)[:, :8])) <= {127, 128}
    assert set(np.unique(tile(2)[:, 8:])) <= {127, 128}
    np.testing.assert_array_equal(tile(1)[:, 8:], tile(0)[:, 8:])
    np.testing.assert_array_equal(tile(2)[:, :8], tile(0)[:, :8])
    assert (tile(3) == 0).all()  # the None cell stays black
    # The top row matches the one-row preview of the same image panels.
    np.testing.assert_array_equal(pixels[:12], read_png(comparison_png(tmp_path / "row.png", top)))


def test_grid_aligns_columns_of_different_widths_and_validates(tmp_path):
    rng = np.random.default_rng(0)
    wide, narrow = rng.random((6, 10)), rng.random((4, 5))
    pixels = read_png(comparison_grid_png(tmp_path / "g.png", [[("a", narrow), ("b", narrow)], [("c", wide)]]))
    assert pixels.shape == (4 + GAP_PX + 6, 10 + GAP_PX + 5)
    assert (pixels[:4, 5:10] == 0).all()  # the narrow panel sits left in its wide column
    with pytest.raises(ValueError, match="at least one"):
        comparison_grid_png(tmp_path / "g.png", [[None], []])
    with pytest.raises(ValueError, match="residual_half_width"):
        comparison_grid_png(tmp_path / "g.png", [[("residual", wide)]], residual_half_width=0.0)
    with pytest.raises(ValueError, match=r"\.png"):
        comparison_grid_png(tmp_path / "g.tif", [[("a", wide)]])
