"""Turn a training run into a model file the CLI and the Slicer module load.

    python -m training.export RUN_DIR --out MODEL.safetensors [--name NAME] [--checkpoint auto|best|last]
        [--register [--default]]

The file is the library's format (safetensors weights + JSON card, sha256 of the weights inside), with a
card that records the data used, the noise range, the mode and the validation metrics. ``--register`` also
adds it to ``MedicalDenoise/Resources/Models.json`` (see ``training/register.py``), so it appears in
``medical-denoise models`` and in the Slicer module's model list.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from MedicalDenoiseLib.errors import MedicalDenoiseError
from MedicalDenoiseLib.models.model_files import ModelCard, load_model, save_model
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.models.twins import twin_kind

from .checkpoint import BEST, CHECKPOINT, load_checkpoint
from .conditioning import run_conditioning
from .config import config_from_dict
from .errors import RunFolderError

__all__ = ["export_run", "model_card", "main"]

_ARCHITECTURE_WORDS = {"residual_autoencoder": "3D residual autoencoder", "gan_generator": "3D GAN generator"}
_MODE_WORDS = {"synthetic": "trained with synthetic noise", "paired": "trained on noisy/clean pairs",
               "self-supervised": "trained self-supervised (Neighbor2Neighbor)", "gan": "trained adversarially"}


def _pick_checkpoint(run: Path, which: str) -> Path:
    if not run.is_dir():
        raise RunFolderError(f"{run}: no such run folder")
    last, best = run / CHECKPOINT, run / BEST
    if which == "auto":
        which = "best" if best.exists() else "last"
    path = best if which == "best" else last
    if not path.exists():
        hint = " (no validation volumes, so no best checkpoint: use --checkpoint last)" if which == "best" else ""
        raise RunFolderError(f"{path}: no {which} checkpoint in {run}{hint}")
    return path


def _loss_words(config) -> str:
    if config.mode == "self-supervised":
        return f"Neighbor2Neighbor (gamma {config.self_supervised.gamma:g}), weighted by 1/estimated sigma^2"
    if config.mode == "gan":
        g = config.gan
        return (f"{g.lambda_l1:g} x L1/sigma + {g.lambda_adv:g} x {g.adversarial_loss} adversarial"
                f" + {g.lambda_feature:g} x discriminator feature matching")
    level = "level drawn" if config.mode == "synthetic" else "SD of noisy - clean"
    low, floor = config.noise.sigma_range[0], config.noise.weight_floor
    return f"MSE weighted by 1/(max(sigma, {low:g})^2 + {floor:g}^2) (sigma: {level})"


def model_card(state: dict[str, Any], name: str | None = None, description: str | None = None) -> ModelCard:
    """The card for the network in checkpoint ``state``."""
    config = config_from_dict(state["config"])
    network = NetworkConfig.from_dict(state["network_config"])
    train_names = state["split"]["train"]
    modalities = sorted({state["modalities"][n] for n in train_names})
    synthetic = config.mode == "synthetic" or (config.mode == "gan" and config.gan.pairs == "synthetic")
    if synthetic:
        kinds = sorted({k for m in modalities for k in config.noise.kinds[m]})
        noise_range = tuple(config.noise.sigma_range)
    else:
        kinds = ["real (paired)" if config.mode in ("paired", "gan") else "real (self-supervised)"]
        levels = [state["noise_levels"][n] for n in train_names]
        noise_range = (float(min(levels)), float(max(levels)))
    init = state.get("init_info") or {}
    if init.get("init_noise_range"):  # a fine-tuned model still knows the levels it started from
        low, high = init["init_noise_range"]
        noise_range = (min(noise_range[0], low), max(noise_range[1], high))
    words = _ARCHITECTURE_WORDS.get(network.architecture, network.architecture)
    started = f", fine-tuned from {init['init_name']}" if init else ""
    summary = description or config.description or (
        f"{words} (noise-predicting, noise-level input), {_MODE_WORDS[config.mode]} on {len(train_names)} local "
        f"{'/'.join(m.upper() for m in modalities)} volume(s){started}.")
    metrics: dict[str, Any] = {}
    best = state["metrics"].get("last" if "mode" in state else "best") or {}
    if best:
        metrics["validation"] = {k.removeprefix("val_"): round(v, 4) if isinstance(v, float) else v for k, v in best.items()}
        metrics["validation_volumes"] = state["split"]["validation"]
        metrics["units"] = "normalised intensities, data range 1 (CT: 2000 HU; MR/US: 99.5th percentile)"
    training = {
        "script": "training/train.py", "mode": config.mode, "steps": state["step"], "max_steps": config.max_steps,
        "batch": config.data.batch_size, "patch": list(config.data.patch_size), "loss": _loss_words(config),
        "optimizer": f"AdamW lr {config.optim.lr:g}, {config.optim.warmup_steps} warm-up steps, cosine decay",
        "seed": config.seed, "processes": state.get("world_size", 1), "device": state.get("device", "cpu"),
        "init": {k: v for k, v in init.items() if k in ("init_name", "init_sha256", "init_architecture")},
        "config": state["config"],
    }
    data = list(train_names)
    if synthetic and config.data.phantom_fraction:
        data.append(f"procedural noise-free phantoms ({config.data.phantom_fraction:.0%} of batches)")
    low, high = noise_range
    use = (f"Research use only; not for diagnosis. Trained on {', '.join(kinds)} noise of SD {low:.1%}-{high:.1%} "
           "of the normalised range; on other noise (e.g. correlated CT noise or speckle when not listed) or "
           "levels it can under- or over-smooth, so compare with the original and look at the residual.")
    return ModelCard(name=name or config.name, description=summary, network=network, noise_kinds=kinds,
                     intended_use=use,
                     noise_range=noise_range, modalities=modalities, training_data=data,
                     training=training, metrics=metrics, conditioning=run_conditioning(True, init.get("init_conditioning"), config.data.sublattice))


def export_run(run: str | Path, out: str | Path, name: str | None = None, which: str = "auto",
               description: str | None = None) -> tuple[Path, str, ModelCard]:
    """Writes the model file; returns its path, sha256 and card.

    Raises:
        RunFolderError: no run or no such checkpoint.
        OutputError / ModelFileError: the file cannot be written or does not load back (from the library).
    """
    run, out = Path(run), Path(out)
    if out.suffix != ".safetensors":
        raise RunFolderError(f"--out {out}: a model file must end in .safetensors")
    if not out.parent.is_dir():
        raise RunFolderError(f"--out {out}: folder {out.parent} does not exist")
    path = _pick_checkpoint(run, which)
    state = load_checkpoint(path)
    card = model_card(state, name, description)
    network = build_network(card.network)
    network.load_state_dict(state["network"], strict=True)
    save_model(out, network, card)
    loaded = load_model(out)  # prove that what was written loads, as the CLI and Slicer will load it
    return out, loaded.sha256, card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the run folder (--out of training.train)")
    p.add_argument("--out", type=Path, required=True, help="the model file to write (.safetensors)")
    p.add_argument("--name", help="model name (default: the config's name)")
    p.add_argument("--description", help="one-line summary for model lists")
    p.add_argument("--checkpoint", default="auto", choices=("auto", "best", "last"),
                   help="best validation score or last step (auto: best when there was validation)")
    p.add_argument("--register", action="store_true", help="add it to MedicalDenoise/Resources/Models.json")
    p.add_argument("--default", action="store_true", help="with --register: make it the default model")
    p.add_argument("--twin-of", metavar="NAME", help="a planar or sub-lattice run: register it as that twin of NAME")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    for stream in (sys.stdout, sys.stderr):
        # Messages hold ×, → or …: never crash on a terminal or pipe that cannot show them.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = p.parse_args(argv)
    try:
        path, sha, card = export_run(args.run, args.out, args.name, args.checkpoint, args.description)
        shown = card.metrics.get("validation", {})
        scores = ", ".join(f"{k} {v}" for k, v in shown.items() if k in ("step", "psnr", "ssim", "n2n"))
        print(f"wrote {path} ({card.name}, sha256 {sha[:16]}…){'; validation: ' + scores if scores else ''}")
        if args.twin_of:
            from .register import register

            register(path, twin_of=args.twin_of)
            kind = twin_kind(card)
            use = "2D images" if kind == "planar" else "the sub-lattices of scanner grain"
            print(f"registered {card.name} in Models.json as the {kind} twin of {args.twin_of}: {use} "
                  f"denoised with {args.twin_of} run through it")
            return 0
        if args.register:
            from .register import register

            entry = register(path, args.default)
            print(f"registered {entry['name']} in Models.json{' as the default' if args.default else ''}")
        print(f"use it: medical-denoise denoise INPUT OUTPUT --model {path if not args.register else card.name}")
        return 0
    except MedicalDenoiseError as exc:
        if args.debug:
            raise
        print(f"training.export: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
