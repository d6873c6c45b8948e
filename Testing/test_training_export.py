"""training/: export a run → a model file the CLI loads → denoise on the input's exact grid; and registering it."""
from __future__ import annotations

import json
import shutil

import numpy as np

from MedicalDenoiseLib.cli.main import main as cli_main
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.models.model_files import load_model
from MedicalDenoiseLib.models.registry import registry_path
from training.export import main as export_main
from training_support import make_volumes, run_train, write_config


def _train(capsys, tmp_path, *extra):
    data = make_volumes(tmp_path / "data", noise=0.05)
    code, _, err = run_train(capsys, "--config", write_config(tmp_path), "--data", data, "--max-steps", 4,
                             "--out", tmp_path / "run", *extra)
    assert code == 0, err
    return data


def test_export_then_denoise_with_the_cli(capsys, tmp_path):
    data = _train(capsys, tmp_path, "--name", "my-ct-model")
    model = tmp_path / "my.safetensors"
    assert export_main([str(tmp_path / "run"), "--out", str(model)]) == 0
    out, _ = capsys.readouterr()
    assert "wrote" in out and "validation: step 4" in out
    card = load_model(model).card
    assert card.name == "my-ct-model" and card.network.architecture == "residual_autoencoder"
    assert card.training_data == ["case0.nrrd", "case1.nrrd"] and card.metrics["validation_volumes"] == ["case2.nrrd"]
    assert card.noise_range == (0.02, 0.1) and card.modalities == ["mr"]
    assert card.metrics["validation"]["psnr"] > 0 and card.training["mode"] == "synthetic"
    assert card.conditioning == "noise-sd"  # trained from scratch on the full-SD estimate, and says so
    source, target = data / "case2.nrrd", tmp_path / "out.nrrd"
    assert cli_main(["denoise", str(source), str(target), "--model", str(model)]) == 0
    original, result = read_volume(source), read_volume(target)
    assert result.array.shape == original.array.shape and result.array.dtype == original.array.dtype
    assert result.geometry == original.geometry
    assert not np.array_equal(result.array, original.array)


def test_export_gan_and_register_then_denoise_by_name(capsys, tmp_path, monkeypatch):
    resources = tmp_path / "Resources"
    resources.mkdir()
    shutil.copy(registry_path(), resources / "Models.json")
    shipped_default = json.loads(registry_path().read_text(encoding="utf-8"))["default"]
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(resources))
    data = _train(capsys, tmp_path, "--mode", "gan", "--name", "tiny-gan")
    model = tmp_path / "gan.safetensors"
    assert export_main([str(tmp_path / "run"), "--out", str(model), "--checkpoint", "last", "--register"]) == 0
    registry = json.loads((resources / "Models.json").read_text(encoding="utf-8"))
    entry = next(m for m in registry["models"] if m["name"] == "tiny-gan")
    assert load_model(resources / entry["file"]).card.network.architecture == "gan_generator"
    assert registry["default"] == shipped_default  # registering without --default leaves it alone
    assert cli_main(["denoise", str(data / "case0.nrrd"), str(tmp_path / "o.nrrd"), "--model", "tiny-gan"]) == 0


def test_export_refuses_a_folder_without_a_run(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert export_main([str(tmp_path / "empty"), "--out", str(tmp_path / "m.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("training.export: error: ") and "no last checkpoint" in err and "Traceback" not in err
    assert export_main([str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt")]) == 1
    assert "must end in .safetensors" in capsys.readouterr().err


def test_planar_run_from_a_volumetric_model_exports_a_twin_that_2d_images_run_through(capsys, tmp_path, monkeypatch,
                                                                                      tiny_model_file):
    resources = tmp_path / "Resources"
    (resources / "Models").mkdir(parents=True)
    shutil.copy(tiny_model_file, resources / "Models" / "tiny-test.safetensors")
    from MedicalDenoiseLib.models.model_files import file_sha256
    registry = {"default": "tiny-test", "models": [{"name": "tiny-test", "file": "Models/tiny-test.safetensors",
                                                    "sha256": file_sha256(tiny_model_file), "summary": "tiny"}]}
    (resources / "Models.json").write_text(json.dumps(registry), encoding="utf-8")
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(resources))
    data = make_volumes(tmp_path / "data", noise=0.05)
    config = write_config(tmp_path, planar=True, data={"patch_size": [1, 16, 16], "batch_size": 4},
                          validation={"crop": [1, 16, 16]})
    code, out, err = run_train(capsys, "--config", config, "--data", data, "--max-steps", 4, "--out",
                               tmp_path / "run", "--init", "tiny-test")
    assert code == 0, err
    twin = tmp_path / "twin.safetensors"
    assert export_main([str(tmp_path / "run"), "--out", str(twin), "--name", "tiny-planar", "--checkpoint", "last",
                        "--twin-of", "tiny-test"]) == 0
    card = load_model(twin).card
    assert card.network.spatial_dims == 2 and card.training_data
    entry = json.loads((resources / "Models.json").read_text(encoding="utf-8"))["models"][0]
    assert entry["name"] == "tiny-test" and entry["planar"]["file"] == "Models/tiny-planar.safetensors"
    from MedicalDenoiseLib.models.registry import open_model
    assert open_model("tiny-test").planar.card.name == "tiny-planar"
    # A twin needs a registered model to attach to.
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "t2.safetensors"), "--checkpoint", "last",
                        "--twin-of", "no-such-model"]) == 1
    assert "no such registered model" in capsys.readouterr().err


def test_a_volumetric_model_cannot_be_registered_as_a_twin(tmp_path, monkeypatch, tiny_model_file):
    import pytest
    from training.errors import ConfigError
    from training.register import register
    resources = tmp_path / "Resources"
    resources.mkdir()
    shutil.copy(registry_path(), resources / "Models.json")
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(resources))
    with pytest.raises(ConfigError, match="needs a planar model"):
        register(tiny_model_file, twin_of="autoencoder-v2")
