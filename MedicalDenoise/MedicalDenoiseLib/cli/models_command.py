"""``medical-denoise models``: the shipped models, whether each file is intact, and its card."""
from __future__ import annotations

from ..errors import ModelFileError
from ..models.model_files import load_model
from ..models.registry import default_model_name, list_models, modality_defaults

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the shipped models and their cards")
    p.add_argument("--verbose", "-v", action="store_true", help="print the training facts and metrics too")
    p.set_defaults(run=run)


_TWIN_USE = {"planar": "2D images run through", "sublattice": "sub-lattices of scanner grain run through"}


def run(args) -> int:
    default = default_model_name()
    by_modality = modality_defaults()
    status = 0
    for entry in list_models():
        modalities = [m.upper() for m, name in by_modality.items() if name == entry.name]
        marker = " (default)" if entry.name == default else ""
        if modalities:
            marker += f" (default for {', '.join(modalities)})"
        try:
            card = load_model(entry.file, expected_sha256=entry.sha256).card
        except ModelFileError as exc:
            print(f"{entry.name}{marker}: UNUSABLE: {exc}")
            status = 1
            continue
        low, high = card.noise_range
        print(f"{entry.name}{marker}: {card.description}")
        print(f"  file {entry.file.name}, sha256 {entry.sha256[:16]}…, {card.network.architecture} "
              f"{list(card.network.features)}")
        print(f"  modalities {', '.join(card.modalities)}; noise {', '.join(card.noise_kinds)}, "
              f"SD {low:.1%}–{high:.1%} of the normalised range")
        print(f"  trained on {len(card.training_data)} volumes: {', '.join(card.training_data)}")
        for kind, (file, sha256) in entry.twins.items():
            try:
                twin = load_model(file, expected_sha256=sha256).card
                print(f"  {_TWIN_USE[kind]} its {kind} twin {twin.name} (file {file.name}, sha256 {sha256[:16]}…)")
            except ModelFileError as exc:
                print(f"  {kind} twin UNUSABLE: {exc}")
                status = 1
        for key, value in card.metrics.items() if args.verbose else []:
            print(f"  {key}: {value}")
        if args.verbose:
            for key, value in card.training.items():
                print(f"  training {key}: {value}")
        for key, value in entry.measured.items():
            print(f"  measured, {key}: {value}")
        print(f"  {card.intended_use}")
    return status
