"""``benchmarks/sublattice.py``: what it reads from a real file, and the time part end to end with the tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from benchmark_support import load_script
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.models.model_files import load_model


@pytest.fixture(scope="module")
def sublattice():
    return load_script("sublattice")


def test_a_b_mode_sequence_gives_its_middle_frame_and_a_volume_its_central_slices(sublattice, tmp_path):
    frames = np.arange(5 * 40 * 50, dtype=np.uint8).reshape(5, 40, 50)
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(tmp_path / "us_frames.mha"))
    image, spacing, modality = sublattice._real_image(tmp_path / "us_frames.mha")
    assert image.shape == (40, 50) and modality == "us" and len(spacing) == 2
    np.testing.assert_array_equal(image, frames[2])
    volume = np.random.default_rng(0).normal(size=(40, 32, 32)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "mr_volume.nii.gz"))
    image, _, modality = sublattice._real_image(tmp_path / "mr_volume.nii.gz")
    assert modality == "mr" and image.shape == (16, 32, 32)
    np.testing.assert_array_equal(image, volume[12:28])


def test_time_part_reports_every_path_and_what_was_done(sublattice, tiny_model_file):
    paths = [p for p in sublattice.PATHS if not p[0].startswith("v3")]
    denoisers = {label: Denoiser(load_model(tiny_model_file), device="cpu", refine=bool(refine), group=refine is True)
                 for label, _, _, _, refine in paths}
    lines = sublattice.time_part(denoisers, tuple(paths))
    rows = {label: next(line for line in lines if line.startswith(f"| {label} ")) for label, *_ in paths}
    whole, network_only, wiener, grouped = rows.values()
    assert "denoised whole" in whole and "2×2 sub-grids" in network_only and "Wiener" not in network_only
    assert "2×2 sub-grids" in wiener and "Wiener-filtered" in wiener and "groups" not in wiener
    assert "Wiener-filtered" in grouped and "groups of 16 similar 4×4×4 cubes" in grouped
    assert wiener.split("|")[3].strip() == "–"  # the command has no Wiener-only option: the library is timed
    assert all(float(row.split("|")[2]) > 0 for row in rows.values())
