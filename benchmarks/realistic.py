"""Realistic noise: how the models do on the noise real scanners make, against the filters users already have.

Three parts, each writing its own section of ``--out`` (``realistic-reference``, ``realistic-real``,
``realistic-lcd``) and PNGs beside it (``realistic_*.png``):

1. **reference** (``realistic_reference.py``): acquisitions simulated from images no shipped model was trained
   on (MR k-space, CT projection-domain noise, ultrasound speckle), scored against the same acquisition without
   noise: PSNR, SSIM, foreground SSIM, the correlation of the residual with the clean detail, and texture
   (high-frequency power against the clean image's, error left in its flat regions); the models
   blind, BM4D told the noise PSD and told a white σ, anisotropic diffusion oracle-tuned and at Slicer's
   defaults, DIPY non-local means.
2. **real** (``realistic_real.py``): every real file of ``--data`` without a reference: noise left, edges
   kept, the method noise, and for CT the noise power spectrum.
3. **lcd** (``realistic_lcd.py``): CT low-contrast detectability, CHO with Laguerre–Gauss channels, AUC.

Usage:
    python benchmarks/realistic.py --out docs/benchmarks.md                   # all parts, ~46 min on 2 cores
    python benchmarks/realistic.py --parts reference --model new.safetensors --model autoencoder-v2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from _common import command_line, default_data_dir, ensure_library_importable, machine_line, utc_now, write_section
from real_noisy import MAX_SHAPE
import realistic_lcd
import realistic_real
import realistic_reference
from realistic_acquisitions import SETTINGS, SOURCES
from realistic_methods import baseline_methods, model_method

ensure_library_importable()
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.models.registry import list_models  # noqa: E402

PARTS = ("reference", "real", "lcd")
TITLES = {"reference": "Realistic noise with a reference (simulated acquisitions)",
          "real": "Realistic noise: real scans without a reference",
          "lcd": "Realistic noise: CT low-contrast detectability"}
RUNTIME = ("Runtime on 2 CPU cores with the three shipped models: reference 31 min (BM4D and DIPY most of it), "
           "real 5 min, lcd 10 min.")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=RUNTIME)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts (default: all)")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="folder of the real files (default: ../shared/data beside the checkout)")
    parser.add_argument("--model", action="append", metavar="NAME_OR_FILE",
                        help="a registry name or a .safetensors file, run blind; repeat for several "
                        "(default: every registered model)")
    parser.add_argument("--device", default="auto", help="where the models run (default auto)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="WORD",
                        help="leave out baselines whose name contains a word: bm4d, dipy, diffusion, oracle, slicer")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (the same noise for every method)")
    parser.add_argument("--out", type=Path, help="markdown file whose realistic-* sections are (re)written")
    reference = parser.add_argument_group("reference")
    reference.add_argument("--sources", nargs="+", choices=[s.key for s in SOURCES], help="only these sources")
    reference.add_argument("--settings", nargs="+", choices=[s.key for s in SETTINGS], metavar="KEY",
                           help=f"only these settings: {', '.join(s.key for s in SETTINGS)}")
    reference.add_argument("--crop", nargs=3, type=int, metavar=("Z", "Y", "X"),
                           help="scored region for every source instead of its own (quick runs)")
    reference.add_argument("--bm4d-crop", nargs=3, type=int, metavar=("Z", "Y", "X"),
                           help="BM4D's region for every source instead of its own")
    reference.add_argument("--psd-realisations", type=int, default=16,
                           help="independent noise draws averaged into the PSD BM4D is told (default 16)")
    real = parser.add_argument_group("real")
    real.add_argument("--files", nargs="+", metavar="PART", help="only files whose name contains one of these")
    real.add_argument("--max-shape", nargs=3, type=int, default=list(MAX_SHAPE), metavar=("Z", "Y", "X"),
                      help=f"largest centred crop (default {' '.join(map(str, MAX_SHAPE))})")
    real.add_argument("--frames", type=int, default=3, help="frames per 2D frame set (default 3)")
    lcd = parser.add_argument_group("lcd")
    lcd.add_argument("--lcd-realisations", type=int, default=100,
                     help="signal-present and as many signal-absent slices per dose (default 100)")
    lcd.add_argument("--lcd-size", type=int, default=128,
                     help="phantom slice edge in 1 mm pixels (default 128; the disc is 120 mm × size / 128)")
    lcd.add_argument("--lcd-doses", nargs="+", type=float, default=list(realistic_lcd.DOSES), metavar="PHOTONS",
                     help="photons per 1 mm bin and view (default: "
                     f"{' '.join(f'{d:g}' for d in realistic_lcd.DOSES)})")
    lcd.add_argument("--resamples", type=int, default=1000,
                     help="random train/test splits of the observer (each with a bootstrap of its test scores)")
    args = parser.parse_args(argv)
    if "real" in args.parts and (args.data is None or not args.data.is_dir()):
        parser.error(f"--data {args.data}: not a folder; the real part needs the real files")
    if args.lcd_size < 96:
        parser.error(f"--lcd-size must be at least 96 pixels (the inserts' ring and squares), got {args.lcd_size}")
    if args.lcd_realisations < 16:
        parser.error(f"--lcd-realisations must be at least 16 (the observer's two folds), got {args.lcd_realisations}")
    args.models = args.model or [entry.name for entry in list_models()]
    args.max_shape = tuple(args.max_shape)
    return args


def header(part: str, denoisers: list[Denoiser], seconds: float) -> list[str]:
    models = ", ".join(f"`{d.name}`" for d in denoisers) or "(none)"
    device = ", ".join(sorted({str(d.device) for d in denoisers})) or "–"
    return [f"## {TITLES[part]}", "",
            f"- Models: {models}, each blind (strength auto); device {device}",
            f"- Machine: {machine_line(torch.__version__, f'{torch.get_num_threads()} torch threads')}",
            f"- Date: {utc_now()}; this part took {seconds / 60:.1f} min",
            f"- Command: `{command_line()}`"]


def reference_intro(args: argparse.Namespace) -> list[str]:
    return ["", "Each setting is one simulated acquisition of a clean image no shipped model was trained on, scored "
            "against the same acquisition without noise (`realisation.clean`: MR zero-filling blurs, and that is not "
            "noise). *Residual r*: correlation of input − output with the clean image's detail (clean − its "
            "2-voxel Gaussian, `metrics.residual_structure_correlation`): ≈ 0 removes noise only, positive removes "
            "anatomy. BM4D runs on a small centre crop only (it is slow); every method is scored there too. BM4D "
            f"told the PSD gets the mean |FFT|² of the noise (noisy − clean) of {args.psd_realisations} independent "
            "acquisitions on its crop (the bm4d package's convention, N σ² for white noise); told a white σ, and "
            "DIPY, get the realised noise SD. Tuned diffusion picks the best PSNR of 5 settings with the clean image "
            "(oracle); Slicer's runs at conductance 1, 5 iterations. *lag-1 r*: the noise's neighbour correlation "
            "(mean over axes)."]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    denoisers = [Denoiser(name, device=args.device) for name in args.models]
    baselines, missing = baseline_methods(args.skip)
    for part in args.parts:
        started = time.perf_counter()
        if part == "reference":
            methods = [*(model_method(d) for d in denoisers), *baselines]
            body, notes = realistic_reference.run_part(
                args.data, methods, args.out, sources=args.sources, settings=args.settings,
                crop=tuple(args.crop) if args.crop else None,
                bm4d_crop=tuple(args.bm4d_crop) if args.bm4d_crop else None,
                psd_realisations=args.psd_realisations, seed=args.seed)
            body = reference_intro(args) + body
            notes = [*missing, *notes]
        elif part == "real":
            body, notes = realistic_real.run_part(args.data, denoisers, args.out, files=args.files,
                                                  max_shape=args.max_shape, frames=args.frames)
            body = ["", "Measures as in *Real noisy volumes* above (`real_noisy.py`): noise left in the input's "
                    "flattest quarter of the foreground and edges kept on its strongest 2 %, output / input; 2D "
                    "frame sets as separate 2D frames. Held out: no shipped model was trained on the file "
                    "(the manifest's newer rows included).", ""] + body
        else:
            body, notes = realistic_lcd.run_part(denoisers, args.out, count=args.lcd_realisations,
                                                 size=args.lcd_size, resamples=args.resamples, seed=args.seed,
                                                 doses=args.lcd_doses)
            body = [""] + body
        section = "\n".join(header(part, denoisers, time.perf_counter() - started) + body +
                            (["", "Not run:", "", *[f"- {note}" for note in notes]] if notes else []))
        print(section)
        if args.out:
            write_section(args.out, f"realistic-{part}", section)
            print(f"wrote the realistic-{part} section of {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
