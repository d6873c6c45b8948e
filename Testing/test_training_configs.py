"""training/configs: the general configs work on any folder; the recipes are the shipped models' own settings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from MedicalDenoiseLib.models.model_files import load_model
from training.config import config_from_dict, config_to_dict, load_config
from training.data import find_volumes
from training.errors import DataError
from training.export import main as export_main
from training_support import make_volumes, run_train

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "training" / "configs"
GENERAL = ("autoencoder", "gan")
RECIPES = ("autoencoder-v1", "autoencoder-v2", "gan-v1", "autoencoder-v3", "autoencoder-v2-planar", "autoencoder-v3-planar",
           "gan-v2", "autoencoder-v5", "autoencoder-v6")
# Names a researcher's folder might hold: spaces, capitals, several dots, any of the formats.
ARBITRARY_NAMES = ("Scan 01.nii.gz", "patient-B_T2w.v2.nrrd", "knee.mha")


def _recipe(name: str):
    return load_config(CONFIGS / "recipes" / f"{name}.yaml")


def test_every_config_loads_and_round_trips():
    for path in [CONFIGS / f"{n}.yaml" for n in GENERAL] + [CONFIGS / "recipes" / f"{n}.yaml" for n in RECIPES]:
        config = load_config(path)
        assert config_from_dict(config_to_dict(config)) == config, path


def test_general_configs_name_no_volumes_and_start_from_the_default_model():
    registry = json.loads((REPO / "MedicalDenoise" / "Resources" / "Models.json").read_text(encoding="utf-8"))
    for name in GENERAL:
        config = load_config(CONFIGS / f"{name}.yaml")
        assert config.validation.volumes == () and config.data.include == () and config.data.exclude == ()
        assert config.validation.fraction > 0
        assert config.init == registry["default"]
        assert config.name not in {m["name"] for m in registry["models"]}  # exporting never shadows a shipped model


@pytest.mark.parametrize("name", ["autoencoder-v2", "gan-v1", "autoencoder-v2-planar", "autoencoder-v3-planar", "gan-v2"])
def test_recipes_are_the_configs_saved_in_the_shipped_models(name):
    recipe = _recipe(name)
    card = load_model(REPO / "MedicalDenoise" / "Resources" / "Models" / f"{name}.safetensors").card
    saved = config_from_dict({**card.training["config"], "data": {**card.training["config"]["data"],
                                                                  "include": list(recipe.data.include)}})
    assert recipe == saved
    trained_on = [n for n in recipe.data.include if n not in recipe.validation.volumes]
    assert card.training_data[:-1] == trained_on  # the last entry is the phantoms
    assert sorted(card.metrics["validation_volumes"]) == sorted(recipe.validation.volumes)


def test_the_first_models_recipe_matches_its_card():
    recipe = _recipe("autoencoder-v1")
    card = load_model(REPO / "MedicalDenoise" / "Resources" / "Models" / "autoencoder-v1.safetensors").card
    assert recipe.network == card.network and recipe.init is None
    assert card.training["steps"] == recipe.max_steps and card.training["batch"] == recipe.data.batch_size
    assert card.training["patch"].startswith(f"{recipe.data.patch_size[0]}^3")
    assert f"lr {recipe.optim.lr:g} " in card.training["optimizer"]
    assert f"{recipe.noise.weight_floor:g}^2" in card.training["loss"]
    assert tuple(card.noise_range) == recipe.noise.sigma_range
    assert sorted({k for kinds in recipe.noise.kinds.values() for k in kinds}) == card.noise_kinds
    assert card.training_data[:-1] == [n for n in recipe.data.include if n not in recipe.validation.volumes]
    assert f"{recipe.data.phantom_fraction:.0%}" in card.training_data[-1]


def test_a_recipe_refuses_a_folder_without_its_volumes(tmp_path):
    make_volumes(tmp_path / "data", 2)
    recipe = _recipe("autoencoder-v2")
    with pytest.raises(DataError, match=r"data.include \['ct_abdomen_3mm_totalseg.nii.gz'.*match none of the volumes"):
        find_volumes(tmp_path / "data", recipe.data.exclude, include=recipe.data.include)


@pytest.mark.parametrize("config_name, mode", [("autoencoder", "self-supervised"), ("autoencoder", "synthetic"),
                                               ("gan", "gan")])
def test_the_quick_start_works_on_any_folder(capsys, tmp_path, config_name, mode):
    """The documented commands on a folder of arbitrarily named volumes; only the patch and crop sizes shrink
    to fit them (and keep the test fast)."""
    data = make_volumes(tmp_path / "data", noise=0.05, shape=(16, 40, 40), names=ARBITRARY_NAMES)
    settings = yaml.safe_load((CONFIGS / f"{config_name}.yaml").read_text(encoding="utf-8"))
    settings["data"].update(patch_size=[16, 32, 32], batch_size=2)
    settings["validation"]["crop"] = [16, 32, 32]
    config = tmp_path / "quick-start.yaml"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    run = tmp_path / "runs" / "my-model"
    code, out, err = run_train(capsys, "--config", config, "--data", data, "--mode", mode, "--max-steps", 2,
                               "--out", run)
    assert code == 0, err
    assert "2 training and 1 validation volume(s)" in out and "fine-tuning autoencoder-v2" in out
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert sorted(state["split"]["train"] + state["split"]["validation"]) == sorted(ARBITRARY_NAMES)
    assert state["metrics"]["last"]["step"] == 2  # the held-out volume was scored
    model = tmp_path / "my-model.safetensors"
    assert export_main([str(run), "--out", str(model), "--name", "my-model", "--checkpoint", "last"]) == 0
    assert load_model(model).card.name == "my-model"
