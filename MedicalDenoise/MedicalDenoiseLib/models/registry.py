"""The shipped models, listed in ``MedicalDenoise/Resources/Models.json`` with their sha256."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError
from .model_files import LoadedModel, load_model

__all__ = ["RegistryEntry", "resources_dir", "registry_path", "list_models", "default_model_name", "resolve_model", "open_model"]


@dataclass(frozen=True)
class RegistryEntry:
    """One shipped model. ``measured`` holds the benchmark's headline numbers for it (docs/benchmarks.md);
    they live here, not in the model file, so measuring again does not change the file's sha256."""

    name: str
    file: Path
    sha256: str
    summary: str
    measured: dict = field(default_factory=dict)


def resources_dir() -> Path:
    """Where Models.json and the model files are: ``$MEDICAL_DENOISE_RESOURCES`` if set; inside the package
    when installed from a wheel; else the module's Resources folder beside the library (a checkout, an
    editable install, the Slicer module folder)."""
    if "MEDICAL_DENOISE_RESOURCES" in os.environ:
        return Path(os.environ["MEDICAL_DENOISE_RESOURCES"])
    library = Path(__file__).resolve().parents[1]
    packaged = library / "resources"
    return packaged if (packaged / "Models.json").is_file() else library.parent / "Resources"


def registry_path() -> Path:
    return resources_dir() / "Models.json"


def _read_registry() -> dict:
    """Models.json, with the keys the registry relies on checked (its full schema is Models.schema.json)."""
    path = registry_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model registry not found; is the Resources folder installed?") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: model registry is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not isinstance(data.get("default"), str):
        raise ModelFileError(f"{path}: model registry needs a 'default' name and a 'models' list")
    for index, model in enumerate(models):
        missing = [key for key in _REQUIRED if not isinstance(model, dict) or not isinstance(model.get(key), str)]
        if missing:
            raise ModelFileError(f"{path}: models[{index}] lacks {', '.join(missing)}")
    return data


_REQUIRED = ("name", "file", "sha256", "summary")


def list_models() -> list[RegistryEntry]:
    data = _read_registry()
    base = registry_path().parent
    return [RegistryEntry(m["name"], base / m["file"], m["sha256"], m["summary"], m.get("measured", {}))
            for m in data["models"]]


def default_model_name(modality: str | None = None) -> str:
    """The model used when none is named: the modality's own default if the registry has one."""
    data = _read_registry()
    return data.get("default_by_modality", {}).get(modality or "", data["default"])


def resolve_model(name_or_path: str | None) -> tuple[Path, str | None]:
    """The file and expected sha256 for a registry name (None = the default) or a path to a model file.

    Raises:
        ModelFileError: for a name that is neither registered nor an existing file.
    """
    name = name_or_path or default_model_name()
    for entry in list_models():
        if entry.name == name:
            return entry.file, entry.sha256
    if name.endswith(".safetensors") or os.sep in name or Path(name).exists():
        return Path(name), None
    names = ", ".join(e.name for e in list_models())
    raise ModelFileError(f"unknown model {name!r}; available: {names}, or the path of a .safetensors model file")


def open_model(name_or_path: str | None = None) -> LoadedModel:
    """Resolves and loads a model, checking the registry's sha256 for shipped models."""
    path, sha = resolve_model(name_or_path)
    return load_model(path, expected_sha256=sha)
