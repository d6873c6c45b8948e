"""Add a model file to the shipped registry (``MedicalDenoise/Resources/Models.json``).

    python -m training.register MODEL_FILE [--default]

The file is copied into ``MedicalDenoise/Resources/Models/`` under its card's name, its sha256 recorded,
and an entry with the card's one-line summary added (or replaced, for the same name).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from MedicalDenoiseLib.io.atomic import write_text_atomically
from MedicalDenoiseLib.models.model_files import load_model
from MedicalDenoiseLib.models.registry import registry_path


def register(model_file: Path, make_default: bool = False) -> dict:
    loaded = load_model(model_file)
    card = loaded.card
    path = registry_path()
    registry = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"default": card.name, "models": []}
    target = path.parent / "Models" / f"{card.name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    if model_file.resolve() != target.resolve():
        shutil.copyfile(model_file, target)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Add a model file to Models.json")
    parser.add_argument("model", type=Path)
    parser.add_argument("--default", action="store_true", help="make it the default model")
    args = parser.parse_args(argv)
    entry = register(args.model, args.default)
    print(f"registered {entry['name']} ({entry['sha256'][:16]}…) in {registry_path()}")


if __name__ == "__main__":
    main()
