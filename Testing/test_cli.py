"""The command line end to end on small files: every bad input the user can give, every odd one that must work."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_refused_in_one_line, oblique_geometry, phantom
from MedicalDenoiseLib.cli.main import main
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.io.volume import Geometry, Volume


def _write(path, array, geometry=None, modality=None):
    geometry = geometry or oblique_geometry()
    write_volume(Volume(array, geometry, modality=modality), path)
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def noisy_nrrd(tmp_path):
    array = phantom() * 500 + np.random.default_rng(0).normal(0, 25, (19, 26, 23))
    return _write(tmp_path / "in.nrrd", array.astype(np.float32))


def _assert_refused(code, err, *needles):
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", *needles)


def test_denoise_file_keeps_geometry_and_type_and_leaves_input_alone(capsys, tmp_path, tiny_model_file):
    hu = phantom(low=-1000, high=1500) + np.random.default_rng(0).normal(0, 30, (19, 26, 23))
    hu = np.rint(hu).astype(np.int16)
    hu[0, 0, 0], hu[0, 0, 1] = -32768, 32767
    source = _write(tmp_path / "scan.mha", hu, modality="ct")  # MetaImage stores geometry losslessly
    before = _sha(source)
    code, out, err = _run(capsys, "denoise", source, tmp_path / "out.mha", "--model", tiny_model_file,
                          "--preview", tmp_path / "p.png")
    assert code == 0, err
    assert _sha(source) == before
    original, result = read_volume(source), read_volume(tmp_path / "out.mha")
    assert result.array.dtype == np.int16 and result.array.shape == original.array.shape
    assert result.geometry == original.geometry
    assert result.array.min() < -500
    assert (tmp_path / "p.png").exists() and f"out.mha: ct, model {tiny_model_file} (chosen with --model)" in out


def test_shipped_model_from_the_console(capsys, tmp_path, noisy_nrrd):
    code, out, err = _run(capsys, "denoise", noisy_nrrd, tmp_path / "o.mha", "--device", "cpu")
    assert code == 0, err
    noisy = read_volume(noisy_nrrd).array
    out_array = read_volume(tmp_path / "o.mha").array
    assert np.std(np.diff(out_array, axis=2)) < 0.7 * np.std(np.diff(noisy, axis=2))


@pytest.mark.parametrize(
    "array, name",
    [
        (np.full((6, 7, 8), 300, np.int16), "constant.nrrd"),
        (np.random.default_rng(1).normal(50, 5, (1, 20, 24)).astype(np.float32), "one_slice.nrrd"),
        (np.random.default_rng(2).normal(50, 5, (3, 5, 7)).astype(np.float32), "tiny.mha"),
    ],
)
def test_odd_volumes_just_work(capsys, tmp_path, tiny_model_file, array, name):
    source = _write(tmp_path / name, array)
    code, _, err = _run(capsys, "denoise", source, tmp_path / f"out_{name}", "--model", tiny_model_file)
    assert code == 0, err
    result = read_volume(tmp_path / f"out_{name}")
    assert result.array.shape == read_volume(source).array.shape
    assert result.array.dtype == array.dtype


def test_nan_voxels_are_reported_and_not_written(capsys, tmp_path, tiny_model_file):
    array = np.random.default_rng(3).normal(50, 5, (8, 9, 10)).astype(np.float32)
    array[1, 2, 3] = np.nan
    source = _write(tmp_path / "nan.nrrd", array)
    code, _, err = _run(capsys, "denoise", source, tmp_path / "o.nrrd", "--model", tiny_model_file)
    assert code == 0
    assert "1 NaN/infinite voxels" in err
    assert np.isfinite(read_volume(tmp_path / "o.nrrd").array).all()


def test_png_in_png_out(capsys, tmp_path, tiny_model_file):
    image = (phantom((1, 40, 48))[0] * 200 + np.random.default_rng(4).normal(0, 10, (40, 48))).clip(0, 255)
    source = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(image.astype(np.uint8)), str(source))
    code, _, err = _run(capsys, "denoise", source, tmp_path / "o.png", "--model", tiny_model_file)
    assert code == 0, err
    out = read_volume(tmp_path / "o.png")
    assert out.array.shape == (40, 48) and out.array.dtype == np.uint8


def test_dicom_series_in_and_out(capsys, tmp_path, tiny_model_file, ct_volume):
    series = tmp_path / "series"
    write_volume(ct_volume, series)
    code, _, err = _run(capsys, "denoise", series, tmp_path / "denoised_series", "--model", tiny_model_file)
    assert code == 0, err
    original, result = read_volume(series), read_volume(tmp_path / "denoised_series")
    assert result.array.shape == original.array.shape and result.modality == "ct"
    np.testing.assert_allclose(result.geometry.origin, original.geometry.origin, atol=1e-4)
    assert result.metadata["0020|000e"] != original.metadata["0020|000e"]
    assert result.metadata["0020|000d"] == original.metadata["0020|000d"]


def test_overwrite_replaces_a_dicom_series_only_when_asked(capsys, tmp_path, tiny_model_file, ct_volume):
    series, target = tmp_path / "series", tmp_path / "denoised_series"
    write_volume(ct_volume, series)
    assert _run(capsys, "denoise", series, target, "--model", tiny_model_file)[0] == 0
    first_uid = read_volume(target).metadata["0020|000e"]
    code, _, err = _run(capsys, "denoise", series, target, "--model", tiny_model_file)
    _assert_refused(code, err, "already exists", "--overwrite")
    code, _, err = _run(capsys, "denoise", series, target, "--model", tiny_model_file, "--overwrite")
    assert code == 0, err
    replaced = read_volume(target)
    assert replaced.metadata["0020|000e"] != first_uid  # a new series, not a mix of old and new files
    assert len(list(target.iterdir())) == ct_volume.array.shape[0]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_overwrite_never_replaces_a_folder_holding_other_files(capsys, tmp_path, tiny_model_file, ct_volume):
    series, target = tmp_path / "series", tmp_path / "mine"
    write_volume(ct_volume, series)
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    code, _, err = _run(capsys, "denoise", series, target, "--model", tiny_model_file, "--overwrite")
    _assert_refused(code, err, "not DICOM")
    assert (target / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_a_batch_that_writes_nothing_leaves_no_output_folder(capsys, tmp_path, tiny_model_file):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("a.nrrd", "b.nrrd"):
        (folder / name).write_bytes(b"not an image")
    code, _, err = _run(capsys, "denoise", folder, tmp_path / "outputs", "--model", tiny_model_file)
    assert code == 1 and "2 of 2 inputs failed" in err
    assert not (tmp_path / "outputs").exists()


def test_a_refused_batch_leaves_no_output_folder(capsys, tmp_path, tiny_model_file, noisy_nrrd):
    folder = tmp_path / "inputs"
    folder.mkdir()
    _write(folder / "v.nrrd", np.zeros((4, 6, 6), np.float32) + 1)
    code, _, err = _run(capsys, "denoise", folder, tmp_path / "missing" / "outputs", "--model", tiny_model_file)
    _assert_refused(code, err, "does not exist")
    assert not (tmp_path / "missing").exists()
    code, _, err = _run(capsys, "denoise", folder, tmp_path / "outputs", "--model", "no-such-model")
    _assert_refused(code, err, "unknown model")
    assert not (tmp_path / "outputs").exists()


def test_folder_of_inputs_continues_past_a_bad_file(capsys, tmp_path, tiny_model_file):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(2):
        _write(folder / f"v{i}.nrrd", np.random.default_rng(i).normal(0, 1, (6, 8, 8)).astype(np.float32))
    (folder / "broken.nrrd").write_bytes(b"not an image")
    code, _, err = _run(capsys, "denoise", folder, tmp_path / "outputs", "--model", tiny_model_file)
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["v0.nrrd", "v1.nrrd"]
    assert "broken.nrrd" in err and "1 of 3 inputs failed" in err


def _four_d(path):
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(path))


def _rgb(path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 3), np.uint8), isVector=True), str(path))


@pytest.mark.parametrize(
    "make, name, needle",
    [
        (None, "missing.nrrd", "no such file"),
        (lambda p: p.write_bytes(b""), "empty.nrrd", "empty"),
        (lambda p: p.write_bytes(os.urandom(300)), "corrupt.nrrd", "cannot be read"),
        (_four_d, "four_d.nrrd", "4D"),
        (_rgb, "rgb.png", "components per pixel"),
    ],
)
def test_bad_inputs_are_refused_in_one_line(capsys, tmp_path, tiny_model_file, make, name, needle):
    source = tmp_path / name
    if make:
        make(source)
    before = _sha(source) if source.exists() else None
    code, _, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", "--model", tiny_model_file)
    _assert_refused(code, err, name, needle)
    assert not (tmp_path / "out.nrrd").exists()
    assert (before is None) or _sha(source) == before


def test_bad_outputs_models_and_weights_are_refused(capsys, tmp_path, tiny_model_file, noisy_nrrd):
    code, _, err = _run(capsys, "denoise", noisy_nrrd, tmp_path / "no" / "such" / "dir.nrrd", "--model", tiny_model_file)
    _assert_refused(code, err, "does not exist")
    code, _, err = _run(capsys, "denoise", noisy_nrrd, noisy_nrrd, "--model", tiny_model_file)
    _assert_refused(code, err, "overwrite the input")
    (tmp_path / "exists.nrrd").write_bytes(b"x")
    code, _, err = _run(capsys, "denoise", noisy_nrrd, tmp_path / "exists.nrrd", "--model", tiny_model_file)
    _assert_refused(code, err, "already exists", "--overwrite")
    code, _, err = _run(capsys, "denoise", noisy_nrrd, tmp_path / "o.nrrd", "--model", "no-such-model")
    _assert_refused(code, err, "unknown model 'no-such-model'; available:")
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(tiny_model_file.read_bytes())
    data[-3] ^= 0xFF
    tampered.write_bytes(bytes(data))
    code, _, err = _run(capsys, "denoise", noisy_nrrd, tmp_path / "o.nrrd", "--model", tampered)
    _assert_refused(code, err, "tampered.safetensors", "checksum")
    assert not (tmp_path / "o.nrrd").exists()


def test_slicer_progress_protocol_from_a_real_process(tmp_path, tiny_model_file, noisy_nrrd):
    proc = subprocess.run(
        [sys.executable, "-m", "MedicalDenoiseLib.cli.main", "denoise", str(noisy_nrrd), str(tmp_path / "o.nrrd"),
         "--model", str(tiny_model_file), "--progress", "slicer"],
        capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    fractions = [float(line.split(">")[1].split("<")[0]) for line in proc.stdout.splitlines()
                 if line.startswith("<filter-progress>")]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_models_lists_the_default(capsys):
    code, out, _ = _run(capsys, "models")
    assert code == 0 and "(default)" in out and "Research use only" in out


def test_demo_on_a_crop_beats_the_noisy_input(capsys, tmp_path):
    pytest.importorskip("nilearn")
    code, out, err = _run(capsys, "demo", "--out", tmp_path / "demo", "--crop", "48", "--device", "cpu", "--noise", "gaussian",
                          "--sigma", "0.05")
    assert code == 0, err
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if line.startswith(("noisy", "autoencoder"))}
    noisy_psnr = float(rows["noisy"][1])
    model_psnr = float([r for k, r in rows.items() if k != "noisy"][0][-3])
    assert model_psnr > noisy_psnr + 3
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {"noisy.nrrd", "denoised.nrrd", "comparison.png"}


def test_evaluate_table_has_model_and_baselines(capsys, tmp_path, tiny_model_file):
    clean = _write(tmp_path / "clean.nrrd", phantom((16, 20, 20)) * 900)
    code, out, err = _run(capsys, "evaluate", clean, "--sigma", "0.1", "--model", tiny_model_file,
                          "--baselines", "gaussian (best σ)", "--out", tmp_path / "t.md")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and "PSNR" not in line]
    assert [r.split("|")[1].strip().split(" (")[0] for r in rows] == ["noisy input", "gaussian", "tiny-test"]
    noisy_psnr, gauss_psnr = float(rows[0].split("|")[2]), float(rows[1].split("|")[2])
    assert gauss_psnr > noisy_psnr
    assert (tmp_path / "t.md").read_text(encoding="utf-8").strip().endswith(rows[-1])


def test_nifti_geometry_survives_within_the_formats_float32_precision(capsys, tmp_path, tiny_model_file):
    source = _write(tmp_path / "mr.nii.gz", (phantom() * 300).astype(np.int16))
    code, _, err = _run(capsys, "denoise", source, tmp_path / "o.nii.gz", "--model", tiny_model_file)
    assert code == 0, err
    original, result = read_volume(source).geometry, read_volume(tmp_path / "o.nii.gz").geometry
    assert result.spacing == original.spacing and result.origin == original.origin
    np.testing.assert_allclose(result.direction, original.direction, atol=1e-6)


def test_without_model_each_image_gets_its_modalitys_default(capsys, tmp_path, tiny_model_file, ct_volume, noisy_nrrd,
                                                               monkeypatch):
    from MedicalDenoiseLib.models.model_files import file_sha256

    resources = tmp_path / "Resources"
    (resources / "Models").mkdir(parents=True)
    entries = []
    for name in ("tiny-mr", "tiny-ct", "tiny-us"):
        target = resources / "Models" / f"{name}.safetensors"
        target.write_bytes(tiny_model_file.read_bytes())
        entries.append({"name": name, "file": f"Models/{name}.safetensors", "sha256": file_sha256(target),
                        "summary": name})
    registry = {"default": "tiny-mr", "default_by_modality": {"ct": "tiny-ct", "us": "tiny-us"}, "models": entries}
    (resources / "Models.json").write_text(__import__("json").dumps(registry), encoding="utf-8")
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(resources))
    folder = tmp_path / "inputs"
    folder.mkdir()
    write_volume(ct_volume, folder / "chest.mha")
    (folder / "brain.nrrd").write_bytes(noisy_nrrd.read_bytes())
    frame = (np.random.default_rng(3).random((40, 52)) * 200).astype(np.uint8)  # an untagged 8-bit B-mode frame
    write_volume(Volume(frame, Geometry((0.3, 0.3), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))), folder / "frame.mha")
    code, out, err = _run(capsys, "denoise", folder, tmp_path / "outputs")
    assert code == 0, err
    assert "chest.mha: ct, model tiny-ct (the default for CT)" in out
    assert "brain.nrrd: mr, model tiny-mr (the default for MR)" in out
    assert "frame.mha: us, model tiny-us (the default for US)" in out
