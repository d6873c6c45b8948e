"""``medical-denoise adapt`` and ``denoise --adapt``: the model file, the summary, refusals, nothing half-written."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_refused_in_one_line, oblique_geometry, phantom
from MedicalDenoiseLib.adaptation.fitted_series import fitted_to, voxels_sha256
from MedicalDenoiseLib.cli.main import main
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.models.model_files import load_model

SHAPE = (20, 64, 64)
# An untrained network gains from its first steps; the lesion check and the final pass come out of the budget.
BUDGET_MINUTES = "0.5"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _scan(path, seed=0, shape=SHAPE):
    array = phantom(shape, seed=seed) * 400 + np.random.default_rng(seed).normal(0, 30, shape)
    write_volume(Volume(array.astype(np.float32), oblique_geometry(), modality="mr"), path)
    return path


@pytest.fixture
def scan(tmp_path):
    return _scan(tmp_path / "series-a.nrrd")


def test_adapt_writes_a_model_fitted_to_this_series(capsys, tmp_path, scan, tiny_model_file):
    model = tmp_path / "fitted.safetensors"
    code, out, err = _run(capsys, "adapt", scan, "--out", model, "--from", tiny_model_file, "--minutes", BUDGET_MINUTES)
    assert code == 0, err
    assert "adapted to this scan" in out and str(model) in out
    card = load_model(model).card
    assert fitted_to(card) == ("series-a.nrrd", voxels_sha256(read_volume(scan).array))
    # Used on the series it was fitted to: no note; on another: a note says so, and the output is written.
    code, _, err = _run(capsys, "denoise", scan, tmp_path / "a.nrrd", "--model", model)
    assert code == 0 and "fitted to another series" not in err
    other = _scan(tmp_path / "series-b.nrrd", seed=1)
    code, _, err = _run(capsys, "denoise", other, tmp_path / "b.nrrd", "--model", model)
    assert code == 0 and "fitted to another series (series-a.nrrd)" in err
    assert read_volume(tmp_path / "b.nrrd").geometry == read_volume(other).geometry


def test_denoise_with_adapt_says_what_it_did_and_saves_the_model(capsys, tmp_path, scan, tiny_model_file):
    model = tmp_path / "kept.safetensors"
    code, out, err = _run(capsys, "denoise", scan, tmp_path / "out.nrrd", "--model", tiny_model_file,
                          "--adapt", BUDGET_MINUTES, "--save-adapted", model)
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    assert "; adapted to this scan:" in summary and " steps of " in summary
    assert model.is_file() and fitted_to(load_model(model).card)[0] == "series-a.nrrd"
    result, original = read_volume(tmp_path / "out.nrrd"), read_volume(scan)
    assert result.geometry == original.geometry and result.array.dtype == original.array.dtype


def test_adapt_refuses_in_one_line_and_writes_nothing(capsys, tmp_path, tiny_model_file):
    thin = _scan(tmp_path / "thin.nrrd", shape=(8, 64, 64))
    model = tmp_path / "never.safetensors"
    code, _, err = _run(capsys, "adapt", thin, "--out", model, "--from", tiny_model_file, "--minutes", "0.1")
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", "thin.nrrd", "too small to adapt on", "64×64×17")
    assert not model.exists()
    constant = tmp_path / "constant.nrrd"
    write_volume(Volume(np.full(SHAPE, 5.0, np.float32), oblique_geometry()), constant)
    code, _, err = _run(capsys, "adapt", constant, "--out", model, "--from", tiny_model_file, "--minutes", "0.1")
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", "constant.nrrd", "constant")
    assert not model.exists()
    code, _, err = _run(capsys, "adapt", constant, "--out", tmp_path / "m.pt", "--minutes", "0.1")
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", "m.pt", ".safetensors")


def test_save_adapted_needs_adapt_and_one_input(capsys, tmp_path, scan, tiny_model_file):
    code, _, err = _run(capsys, "denoise", scan, tmp_path / "out.nrrd", "--model", tiny_model_file,
                        "--save-adapted", tmp_path / "m.safetensors")
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", "--save-adapted needs --adapt")
    assert not (tmp_path / "out.nrrd").exists()
    with pytest.raises(SystemExit):
        main(["adapt", str(scan), "--out", str(tmp_path / "m.safetensors"), "--minutes", "0"])
