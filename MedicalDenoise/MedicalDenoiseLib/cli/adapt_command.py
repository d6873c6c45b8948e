"""``medical-denoise adapt INPUT --out MODEL.safetensors``: fit a shipped model to one scan, on that scan alone.

The written model is for that series: its card names the input file and a hash of its voxels, and denoising
another series with it says so. When adapting does not beat the shipped model on the held-back part of the
scan, nothing is written and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..adaptation.fine_tune import DEFAULT_MINUTES, adapt_to_scan
from ..errors import InputError, OutputError
from ..inference.devices import DEVICE_CHOICES
from ..inference.normalization import MODALITIES, guess_modality
from ..io.formats import SUPPORTED_DESCRIPTION
from ..io.reading import read_volume
from ..models.model_files import save_model
from ..models.registry import default_model_name, open_model
from .parent_watch import exit_with_parent
from .progress import PROGRESS_MODES, make_progress

__all__ = ["add_parser", "run", "minutes", "check_model_output"]


def minutes(value: str) -> float:
    """A positive number of minutes (argparse type)."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number > 24 * 60:
        raise argparse.ArgumentTypeError(f"minutes must be a number above 0 and at most 1440, got {value!r}")
    return number


def check_model_output(path: Path, overwrite: bool) -> None:
    """Refuses a model file path that is not ``.safetensors``, exists (without ``overwrite``) or has no folder."""
    if path.suffix != ".safetensors":
        raise OutputError(f"{path}: a model file must end in .safetensors")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; use --overwrite to replace it")
    if not path.parent.exists():
        raise OutputError(f"{path}: folder {path.parent} does not exist")


def add_parser(sub) -> None:
    p = sub.add_parser("adapt", help="fit a model to one scan (self-supervised, on that scan alone)",
                       description="Fine-tune a shipped model on INPUT alone and write it to --out; use it with "
                                   "`medical-denoise denoise INPUT OUTPUT --model MODEL.safetensors`.")
    p.add_argument("input", type=Path, help=f"the scan: {SUPPORTED_DESCRIPTION}")
    p.add_argument("--out", type=Path, required=True, help="the adapted model file to write (.safetensors)")
    p.add_argument("--minutes", type=minutes, default=DEFAULT_MINUTES,
                   help=f"time budget (default {DEFAULT_MINUTES:g}); adapting stops then")
    p.add_argument("--from", dest="base", metavar="NAME", help="model to start from: a registry name or a "
                   ".safetensors file (default: the shipped default for the scan's modality)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where it trains (default: auto)")
    p.add_argument("--modality", default="auto", choices=("auto", *MODALITIES), help="intensity normalisation")
    p.add_argument("--progress", default="auto", choices=PROGRESS_MODES, help="bar on a terminal, slicer, none")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--exit-with-parent", type=int, metavar="PID", help="stop, writing nothing, once process PID has ended")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.exit_with_parent is not None:
        exit_with_parent(args.exit_with_parent)
    check_model_output(args.out, args.overwrite)
    if not args.input.exists():
        raise InputError(f"{args.input}: no such file or folder")
    volume = read_volume(args.input)
    modality = guess_modality(volume.array, volume.modality if args.modality == "auto" else args.modality)
    base = open_model(args.base or default_model_name(modality))
    progress = make_progress(args.progress, f"adapting to {args.input.name}")
    try:
        adaptation = adapt_to_scan(volume, base, seconds=args.minutes * 60, modality=modality, device=args.device,
                                   progress=progress, keep_time_to_denoise=False)
    finally:
        progress.close()
    print(f"{args.input}: {base.card.name}, {adaptation.noise.describe()}; {adaptation.describe()}", flush=True)
    if not adaptation.kept:
        print(f"medical-denoise: {args.input}: no model written; denoise with {base.card.name}", file=sys.stderr)
        return 1
    save_model(args.out, adaptation.model.network, adaptation.model.card)
    print(f"{args.input} -> {args.out}: use it with `medical-denoise denoise {args.input} OUTPUT --model {args.out}`",
          flush=True)
    return 0
