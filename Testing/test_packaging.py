"""A wheel built from the repository works on its own: every library module and every shipped model is in it,
and the command finds the models offline wherever the wheel is installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "MedicalDenoise" / "MedicalDenoiseLib"
RESOURCES = ROOT / "MedicalDenoise" / "Resources"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(out), str(ROOT)], check=True, capture_output=True, cwd=out)
    (built,) = out.glob("medical_denoise-*.whl")
    return built


def test_wheel_holds_every_library_module_and_shipped_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(LIBRARY.parent).as_posix() for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts}
    assert not modules - names, f"library modules missing from the wheel: {sorted(modules - names)}"
    registry = json.loads((RESOURCES / "Models.json").read_text(encoding="utf-8"))
    for entry in registry["models"]:
        assert f"MedicalDenoiseLib/resources/{entry['file']}" in names, f"{entry['name']} is not in the wheel"
    assert "MedicalDenoiseLib/resources/Models.json" in names


def test_installed_wheel_finds_and_verifies_its_models_offline(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    probe = (
        "import MedicalDenoiseLib, json\n"
        "from MedicalDenoiseLib.models.registry import default_model_name, list_models, open_model, resources_dir\n"
        "model = open_model()\n"  # checks the file against the registry's sha256
        "print(json.dumps({'library': MedicalDenoiseLib.__file__, 'resources': str(resources_dir()),\n"
        "                  'default': model.card.name, 'models': [m.name for m in list_models()]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MEDICAL_DENOISE_RESOURCES"}
    env["PYTHONPATH"] = str(target)
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["library"]).is_relative_to(target), found["library"]
    assert Path(found["resources"]).is_relative_to(target), found["resources"]
    registry = json.loads((RESOURCES / "Models.json").read_text(encoding="utf-8"))
    assert found["default"] == registry["default"]
    assert found["models"] == [m["name"] for m in registry["models"]]
