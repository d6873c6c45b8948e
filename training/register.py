"""Add a model file to the shipped registry (``MedicalDenoise/Resources/Models.json``).

    python -m training.register MODEL_FILE [--default | --twin-of NAME]

The file is copied into ``MedicalDenoise/Resources/Models/`` under its card's name, its sha256 recorded,
and an entry with the card's one-line summary added (or replaced, for the same name). Given ``--twin-of NAME``,
a planar model becomes NAME's planar twin instead (2D images denoised with NAME run through it), and a model
trained on sub-lattices (``data.sublattice``) its sub-lattice twin (the sub-lattices of scanner grain run
through it); see ``MedicalDenoiseLib/models/twins.py``.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from MedicalDenoiseLib.io.atomic import write_text_atomically
from MedicalDenoiseLib.models.model_files import load_model
from MedicalDenoiseLib.models.registry import registry_path
from MedicalDenoiseLib.models.twins import twin_kind

from .errors import ConfigError


def register(model_file: Path, make_default: bool = False, twin_of: str | None = None) -> dict:
    """Adds ``model_file`` to the registry and returns its entry (for a twin: the entry it was attached to).

    Raises:
        ConfigError: ``twin_of`` names no registered model, or the file is neither planar nor trained on
            sub-lattices.
    """
    loaded = load_model(model_file)
    card = loaded.card
    path = registry_path()
    registry = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"default": card.name, "models": []}
    if twin_of is not None:
        return _attach_twin(registry, path, model_file, loaded, twin_of)
    target = _copy_beside_the_models(model_file, card.name, path)
    # Only what the registry reads: the card inside the file (under its sha256) holds everything else.
    entry = {
        "name": card.name,
        "file": target.relative_to(path.parent).as_posix(),
        "sha256": loaded.sha256,
        "summary": card.description,
    }
    registry["models"] = [m for m in registry["models"] if m["name"] != card.name] + [entry]
    if make_default:
        registry["default"] = card.name
    write_text_atomically(path, json.dumps(registry, indent=2, ensure_ascii=False) + "\n")
    return entry


def _copy_beside_the_models(model_file: Path, name: str, registry: Path) -> Path:
    """``Models/NAME.safetensors`` beside the registry, copied from ``model_file`` unless it is that file."""
    target = registry.parent / "Models" / f"{name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    if model_file.resolve() != target.resolve():
        shutil.copyfile(model_file, target)
    return target


def _attach_twin(registry: dict, path: Path, model_file: Path, loaded, twin_of: str) -> dict:
    kind = twin_kind(loaded.card)
    if kind is None:
        raise ConfigError(f"{model_file}: --twin-of needs a planar model (training config planar: true) or one "
                          "trained on sub-lattices (data.sublattice)")
    parent = next((m for m in registry["models"] if m["name"] == twin_of), None)
    if parent is None:
        names = ", ".join(m["name"] for m in registry["models"])
        raise ConfigError(f"--twin-of {twin_of}: no such registered model; registered: {names}")
    target = _copy_beside_the_models(model_file, loaded.card.name, path)
    parent[kind] = {"file": target.relative_to(path.parent).as_posix(), "sha256": loaded.sha256}
    write_text_atomically(path, json.dumps(registry, indent=2, ensure_ascii=False) + "\n")
    return parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Add a model file to Models.json")
    parser.add_argument("model", type=Path)
    parser.add_argument("--default", action="store_true", help="make it the default model")
    parser.add_argument("--twin-of", metavar="NAME", help="a planar or sub-lattice model: make it that twin of NAME")
    args = parser.parse_args(argv)
    entry = register(args.model, args.default, args.twin_of)
    what = f"as a twin of {args.twin_of}" if args.twin_of else f"({entry['sha256'][:16]}…)"
    print(f"registered {args.model.name if args.twin_of else entry['name']} {what} in {registry_path()}")


if __name__ == "__main__":
    main()
