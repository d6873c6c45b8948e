"""``benchmarks/quality.py`` and ``benchmarks/real_noisy.py`` end to end on tiny phantoms and the tiny model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom

from benchmark_support import load_script


@pytest.fixture(scope="module")
def quality():
    return load_script("quality")


@pytest.fixture(scope="module")
def real_noisy():
    return load_script("real_noisy")


def write_phantom(path: Path, shape=(20, 28, 28), noise: float = 0.0) -> Path:
    image = phantom(shape, low=0.0, high=500.0)
    if noise:
        image = image + np.random.default_rng(0).normal(0, noise, shape).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(np.clip(image, 0, None)), str(path))
    return path


def test_centre_crop_per_axis(quality):
    array = np.arange(10 * 12 * 14).reshape(10, 12, 14)
    assert quality.centre_crop(array, 8).shape == (8, 8, 8)
    assert quality.centre_crop(array, (None, 4, 20)).shape == (10, 4, 14)
    np.testing.assert_array_equal(quality.centre_crop(array, (None, 2, 2)), array[:, 5:7, 6:8])
    assert quality.centre_crop(array, 0).shape == array.shape


def test_quality_writes_a_table_with_foreground_ssim_and_a_two_row_png(quality, tmp_path, tiny_model_file):
    clean = write_phantom(tmp_path / "phantom.nii.gz")
    out = tmp_path / "docs" / "bench.md"
    quality.main(["--clean", str(clean), "--crop", "24", "--settings", "gaussian:0.05", "rician:0.05",
                  "--skip", "bm4d", "non-local", "dipy", "total", "--model", str(tiny_model_file), "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "| method | Gaussian 5 % | Rician 5 % |" in text
    cells = [line for line in text.splitlines() if line.startswith("| gaussian (best σ) |")][0].split("|")[2:4]
    assert all(len(cell.split("/")) == 4 for cell in cells)  # PSNR / SSIM / foreground SSIM / seconds
    assert "tiny-test (blind)" in text
    png = out.parent / "quality_phantom_gaussian_0.05.png"
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))
    assert pixels.shape[0] == 2 * 24 + 4  # images above residuals


def test_quality_skips_missing_files_with_a_note(quality, tmp_path, capsys, tiny_model_file):
    write_phantom(tmp_path / "mr_brain_t1gd_brain2_pyradiomics.nrrd", shape=(8, 24, 24), noise=0.0)
    out = tmp_path / "bench.md"
    quality.main(["--volumes", "brain2", "ct-abdomen", "--data", str(tmp_path), "--settings", "gaussian:0.05",
                  "--skip", "bm4d", "non-local", "dipy", "total", "diffusion", "--model", str(tiny_model_file),
                  "--out", str(out)])
    assert "ct_abdomen_3mm_totalseg.nii.gz` not found" in capsys.readouterr().err  # said at once...
    text = out.read_text(encoding="utf-8")
    assert "Volumes not run:" in text and "ct_abdomen_3mm_totalseg.nii.gz` not found" in text  # ...and in the doc
    assert "mr_brain_t1gd_brain2" in text  # the volume that exists was still run


def test_quality_stops_when_no_volume_exists(quality, tmp_path):
    with pytest.raises(SystemExit, match="not found in"):
        quality.main(["--volumes", "brain2", "--data", str(tmp_path), "--skip", "model"])


def test_real_noisy_measures_noise_left_and_edges_kept(real_noisy, tmp_path, tiny_model_file):
    data = tmp_path / "data"
    data.mkdir()
    write_phantom(data / "mr_phantom.nii.gz", noise=25.0)
    out = tmp_path / "bench.md"
    real_noisy.main(["--data", str(data), "--model", str(tiny_model_file), "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ")][1:]
    assert [row[2].strip() for row in rows] == ["input", "tiny-test (blind)",
                                                "anisotropic diffusion (conductance 1, 5 iterations)",
                                                "Gaussian 1 px (plain blur, for scale)"]
    blur_noise_left, blur_edges_kept = float(rows[3][4]), float(rows[3][5])
    assert blur_noise_left < 0.7 and blur_edges_kept < 0.95
    assert "seen in training" in rows[0][1]
