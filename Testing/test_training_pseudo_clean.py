"""Cleaner training targets (training/pseudo_clean.py): block averaging on the right grid, BM4D told the noise
the averaged volume holds. BM4D itself is replaced by a stand-in that records what it was given (the package
is optional and absent in CI)."""
from __future__ import annotations

import numpy as np
import pytest

from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.io.writing import write_volume
from conftest import oblique_geometry
from training import pseudo_clean as module


def _voxel_centre(geometry, index_zyx):
    size = len(geometry.spacing)
    direction = np.asarray(geometry.direction).reshape(size, size)
    return np.asarray(geometry.origin) + direction @ (np.asarray(geometry.spacing) * np.asarray(index_zyx[::-1]))


def test_an_averaged_voxel_sits_at_the_centre_of_its_block():
    geometry = oblique_geometry()
    averaged = module.averaged_geometry(geometry, (1, 2, 2))
    assert averaged.spacing == pytest.approx((2 * geometry.spacing[0], 2 * geometry.spacing[1], geometry.spacing[2]))
    block = [_voxel_centre(geometry, (3, 2 * 5 + dy, 2 * 7 + dx)) for dy in (0, 1) for dx in (0, 1)]
    assert _voxel_centre(averaged, (3, 5, 7)) == pytest.approx(np.mean(block, axis=0))


def test_volumes_are_averaged_then_denoised_with_their_estimated_noise(tmp_path, monkeypatch):
    told = []

    def fake_bm4d(array, sigma):
        told.append(sigma)
        return np.full_like(array, array.mean())

    monkeypatch.setattr(module, "_bm4d", fake_bm4d)
    rng = np.random.default_rng(0)
    image = (100.0 + 10.0 * rng.standard_normal((12, 70, 80))).astype(np.float32)
    data, out = tmp_path / "data", tmp_path / "clean"
    data.mkdir()
    write_volume(Volume(image, oblique_geometry()), data / "mr_noisy.nrrd")
    write_volume(Volume(image[:4], oblique_geometry()), data / "other.nrrd")
    assert module.main([str(data), str(out), "--include", "mr_*"]) == 0
    assert not (out / "other.nrrd").exists()
    cleaned = read_volume(out / "mr_noisy.nrrd")
    assert cleaned.array.shape == (12, 35, 40)  # 12 slices are too few to average
    assert cleaned.geometry.spacing == pytest.approx(module.averaged_geometry(oblique_geometry(), (1, 2, 2)).spacing)
    # white noise of SD 10 averaged over 2 × 2 voxels: BM4D is told about 5
    assert told == [pytest.approx(5.0, rel=0.15)]
    assert read_volume(data / "mr_noisy.nrrd").array == pytest.approx(image)  # the input is untouched


def test_a_folder_without_matching_volumes_is_one_line_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_volume(Volume(np.zeros((4, 8, 8), np.float32), oblique_geometry()), data / "ct_only.nrrd")
    assert module.main([str(data), str(tmp_path / "out"), "--include", "mr_*"]) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("pseudo_clean: error:") and "\n" not in message and "mr_*" in message
    assert not (tmp_path / "out").exists()
