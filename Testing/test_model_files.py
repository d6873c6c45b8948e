from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from MedicalDenoiseLib.errors import ModelFileError
from MedicalDenoiseLib.models.model_files import FORMAT, ModelCard, file_sha256, load_model, save_model
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.models.registry import list_models, open_model, resolve_model


REPO = Path(__file__).resolve().parent.parent


def test_round_trip_keeps_weights_and_card(tmp_path):
    torch.manual_seed(1)
    config = NetworkConfig(features=(4, 8), blocks_per_level=(1, 2))
    net = build_network(config)
    card = ModelCard(name="m", description="d", network=config, noise_kinds=["gaussian"], noise_range=(0.01, 0.1),
                     training_data=["a.nii.gz"], metrics={"psnr": 30.0})
    sha = save_model(tmp_path / "m.safetensors", net, card)
    loaded = load_model(tmp_path / "m.safetensors", expected_sha256=sha)
    assert loaded.card == card
    for name, tensor in net.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], tensor)
    assert not loaded.network.training
    assert list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]  # no temp file left


def test_registry_checksum_mismatch_is_refused(tiny_model_file):
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(tiny_model_file, expected_sha256="0" * 64)


def test_flipped_byte_in_weights_is_refused_without_registry(tiny_model_file, tmp_path):
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(tiny_model_file.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="do not match their stored checksum"):
        load_model(tampered)


def test_truncated_empty_missing_and_foreign_files_are_refused(tiny_model_file, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_model_file.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="not a readable safetensors model file"):
        load_model(truncated)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model(empty)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a MedicalDenoise model"):
        load_model(foreign)


def test_card_that_does_not_match_the_weights_is_refused(tmp_path):
    net = build_network(NetworkConfig(features=(4, 8), blocks_per_level=(1, 1)))
    wrong = ModelCard(name="w", description="", network=NetworkConfig(features=(4, 16), blocks_per_level=(1, 1)))
    save_model(tmp_path / "w.safetensors", net, wrong)
    with pytest.raises(ModelFileError, match="do not fit the network"):
        load_model(tmp_path / "w.safetensors")


def test_file_is_plain_safetensors_with_json_card(tiny_model_file):
    header_length = int.from_bytes(tiny_model_file.read_bytes()[:8], "little")
    header = json.loads(tiny_model_file.read_bytes()[8 : 8 + header_length])
    assert header["__metadata__"]["format"] == FORMAT
    assert json.loads(header["__metadata__"]["card"])["name"] == "tiny-test"


def test_shipped_models_match_the_registry():
    entries = list_models()
    assert entries, "Models.json lists no model"
    for entry in entries:
        assert file_sha256(entry.file) == entry.sha256, entry.name
        assert open_model(entry.name).card.name == entry.name


def test_shipped_models_carry_complete_cards():
    """Every shipped model says what it was trained on, for which noise, for what use, and what it measured."""
    for entry in list_models():
        card = open_model(entry.name).card
        assert card.training_data and card.modalities, entry.name
        assert 0 < card.noise_range[0] < card.noise_range[1] < 1, entry.name
        assert "not for diagnosis" in card.intended_use.lower(), entry.name
        source = entry.measured.get("source", "")
        assert source.startswith("docs/") and (REPO / source).is_file(), entry.name  # numbers come from a document
        assert entry.measured.get("command"), entry.name  # ...and the command that measured them
        assert any(key.startswith("MNI152") for key in entry.measured), entry.name


def test_shipped_planar_twins_are_planar_intact_and_described():
    twins = [entry for entry in list_models() if "planar" in entry.twins]
    assert twins, "no shipped model has a planar twin: 2D images would run the slow volumetric path"
    for entry in twins:
        file, sha256 = entry.twins["planar"]
        assert file_sha256(file) == sha256, entry.name
        model = open_model(entry.name)
        twin = model.planar.card
        assert twin.network.spatial_dims == 2 and twin.training_data and twin.modalities, entry.name
        # The twin is its model's network made planar: the same channels and the same conditioning.
        assert twin.network.features == model.card.network.features, entry.name
        assert twin.network.noise_level_input == model.card.network.noise_level_input, entry.name
        assert twin.conditioning == model.card.conditioning, entry.name
        assert "not for diagnosis" in twin.intended_use.lower(), entry.name


def test_registry_refuses_unknown_names_and_resolves_paths(tiny_model_file):
    with pytest.raises(ModelFileError, match="unknown model 'nope'; available: "):
        resolve_model("nope")
    assert resolve_model(str(tiny_model_file)) == (tiny_model_file, None)


def test_tampered_shipped_model_is_refused(tmp_path, monkeypatch):
    from MedicalDenoiseLib.models import registry

    resources = tmp_path / "Resources"
    shutil.copytree(registry.resources_dir(), resources)
    entry = list_models()[0]
    target = resources / entry.file.relative_to(registry.resources_dir())
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(resources))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        open_model(entry.name)


def _registry_schema() -> dict:
    from MedicalDenoiseLib.models.registry import resources_dir

    return json.loads((resources_dir() / "Models.schema.json").read_text(encoding="utf-8"))


def test_models_json_follows_its_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from MedicalDenoiseLib.models.registry import registry_path

    registry = json.loads(registry_path().read_text(encoding="utf-8"))
    jsonschema.validate(registry, _registry_schema())
    names = [m["name"] for m in registry["models"]]
    assert registry["default"] in names and len(set(names)) == len(names)
    assert set(registry.get("default_by_modality", {}).values()) <= set(names)


@pytest.mark.parametrize("damage", [
    lambda r: r["models"][0].update(architecture="residual_autoencoder"),  # a field nothing reads
    lambda r: r["models"][0].pop("sha256"),
    lambda r: r["models"][0].update(sha256="ABC"),
    lambda r: r.update(default_by_modality={"xray": "autoencoder-v2"}),
])
def test_schema_refuses_fields_the_registry_does_not_read_or_needs(damage):
    jsonschema = pytest.importorskip("jsonschema")
    from MedicalDenoiseLib.models.registry import registry_path

    registry = json.loads(registry_path().read_text(encoding="utf-8"))
    damage(registry)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(registry, _registry_schema())


def test_registry_names_what_a_broken_entry_lacks(tmp_path, monkeypatch):
    from MedicalDenoiseLib.models.registry import list_models

    (tmp_path / "Models.json").write_text(json.dumps({"default": "x", "models": [{"name": "x", "file": "Models/x.safetensors"}]}),
                                          encoding="utf-8")
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(tmp_path))
    with pytest.raises(ModelFileError, match=r"models\[0\] lacks sha256, summary"):
        list_models()


def test_modality_default_falls_back_to_the_general_default(tmp_path, monkeypatch):
    from MedicalDenoiseLib.models.registry import default_model_name, registry_path

    registry = json.loads(registry_path().read_text(encoding="utf-8"))
    registry["default_by_modality"] = {"ct": registry["models"][-1]["name"]}
    (tmp_path / "Models.json").write_text(json.dumps(registry), encoding="utf-8")
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(tmp_path))
    assert default_model_name("ct") == registry["models"][-1]["name"]
    assert default_model_name("mr") == default_model_name() == registry["default"]
