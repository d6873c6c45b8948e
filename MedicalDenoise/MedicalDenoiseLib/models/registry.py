"""The shipped models, listed in ``MedicalDenoise/Resources/Models.json`` with their sha256."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError
from .model_files import LoadedModel, load_model
from .twins import TWIN_KINDS, twin_kind

__all__ = ["RegistryEntry", "resources_dir", "registry_path", "list_models", "modality_defaults", "default_model_name", "resolve_model", "open_model"]


@dataclass(frozen=True)
class RegistryEntry:
    """One shipped model. ``measured`` holds the benchmark's headline numbers for it (docs/benchmarks.md);
    they live here, not in the model file, so measuring again does not change the file's sha256.
    ``twins`` maps a twin kind ("planar": the network 2D images run through; "sublattice": the network that
    runs on the sub-lattices of scanner grain; see ``twins.py``) to its file and sha256."""

    name: str
    file: Path
    sha256: str
    summary: str
    measured: dict = field(default_factory=dict)
    twins: dict[str, tuple[Path, str | None]] = field(default_factory=dict)


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
    entries = []
    for m in data["models"]:
        twins = {kind: (base / m[kind]["file"], m[kind].get("sha256")) for kind in TWIN_KINDS if m.get(kind)}
        entries.append(RegistryEntry(m["name"], base / m["file"], m["sha256"], m["summary"], m.get("measured", {}), twins))
    return entries


def modality_defaults() -> dict[str, str]:
    """Modality → the model used for it when none is named, where it differs from the general default."""
    return dict(_read_registry().get("default_by_modality", {}))


def default_model_name(modality: str | None = None) -> str:
    """The model used when none is named: the modality's own default if the registry has one."""
    data = _read_registry()
    return data.get("default_by_modality", {}).get(modality or "", data["default"])


def resolve_model(name_or_path: str | None) -> tuple[Path, str | None]:
    """The file and expected sha256 for a registry name (None = the default) or a path to a model file.

    Raises:
        ModelFileError: for a name that is neither registered nor an existing file.
    """
    entry, path = _resolve(name_or_path)
    return (entry.file, entry.sha256) if entry is not None else (path, None)


def _resolve(name_or_path: str | None) -> tuple[RegistryEntry | None, Path | None]:
    """The registry entry of a name (None = the default), or else the path of a model file."""
    entries = list_models()
    name = name_or_path or default_model_name()
    entry = next((e for e in entries if e.name == name), None)
    if entry is not None:
        return entry, None
    if name.endswith(".safetensors") or os.sep in name or Path(name).exists():
        return None, Path(name)
    names = ", ".join(e.name for e in entries)
    raise ModelFileError(f"unknown model {name!r}; available: {names}, or the path of a .safetensors model file")


def open_model(name_or_path: str | None = None) -> LoadedModel:
    """Resolves and loads a model, checking the registry's sha256 for shipped models; a shipped model's
    twins are loaded with it (checked the same way).

    Raises:
        ModelFileError: for an unknown name, a damaged file, or a twin that is not of its kind.
    """
    entry, path = _resolve(name_or_path)
    if entry is None:
        return load_model(path)
    model = load_model(entry.file, expected_sha256=entry.sha256)
    for kind, (file, sha256) in entry.twins.items():
        twin = load_model(file, expected_sha256=sha256)
        if twin_kind(twin.card) != kind:
            raise ModelFileError(f"{file}: registered as the {kind} twin of {entry.name} but is not one "
                                 f"(its card says {twin_kind(twin.card) or 'a whole-image model'})")
        setattr(model, kind, twin)
    return model
