"""Denoising quality against classical baselines: PSNR / SSIM / seconds per method and noise setting.

One clean volume (default: the MNI152 T1 template that ships with nilearn, centre 128³ crop) gets known
noise per setting; the classical baselines of ``MedicalDenoiseLib.baselines.BASELINES`` and the model
denoise it, and everything is scored against the clean volume. The baselines are at their best: the
``best …`` ones are tuned on the clean image (oracle), NLM and BM4D are told the true noise SD. The model
is blind: it estimates the noise itself.

Usage:
    python benchmarks/quality.py --out docs/benchmarks.md
    python benchmarks/quality.py --crop 48 --settings gaussian:0.05 --skip "non-local means" --model tiny.safetensors
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from _common import command_line, ensure_library_importable, machine_line, utc_now, write_section

ensure_library_importable()
from MedicalDenoiseLib.baselines import BASELINES, bm4d_available  # noqa: E402
from MedicalDenoiseLib.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.image_io import read_volume  # noqa: E402
from MedicalDenoiseLib.metrics import psnr, ssim3d  # noqa: E402
from MedicalDenoiseLib.noise_models import NOISE_MODELS, make_noise  # noqa: E402
from MedicalDenoiseLib.normalization import MODALITIES, IntensityNormalizer, guess_modality  # noqa: E402
from MedicalDenoiseLib.preview import comparison_labels, comparison_png  # noqa: E402
from MedicalDenoiseLib.sample_data import mni152_t1_path  # noqa: E402
from MedicalDenoiseLib.volume import Geometry, Volume  # noqa: E402

DEFAULT_SETTINGS = ("gaussian:0.03", "gaussian:0.05", "gaussian:0.10", "rician:0.05")
BM4D = "BM4D (true σ)"
MODEL = "model"


class Score(NamedTuple):
    psnr: float
    ssim: float
    seconds: float | None  # None: not timed (the noisy input, a re-scored output)
    params: str  # parameters chosen or told, for the notes under the table


def parse_setting(token: str) -> tuple[str, float]:
    """``"gaussian:0.05"`` → ("gaussian", 0.05): the noise SD as a fraction of the normalised range."""
    kind, _, value = token.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"setting must be KIND:FRACTION, e.g. gaussian:0.05, got {token!r}") from None
    if kind not in NOISE_MODELS:
        raise argparse.ArgumentTypeError(f"noise kind must be one of {', '.join(NOISE_MODELS)}, got {kind!r}")
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(f"noise fraction must be in (0, 1), got {fraction} in {token!r}")
    return kind, fraction


def setting_label(token: str) -> str:
    kind, fraction = parse_setting(token)
    return f"{kind.capitalize()} {fraction * 100:g} %"


def centre_crop(array: np.ndarray, edge: int) -> np.ndarray:
    """The centred cube of ``edge`` voxels (clipped to the array); ``edge <= 0`` returns the array."""
    if edge <= 0:
        return array
    slices = tuple(slice(max(0, (n - edge) // 2), max(0, (n - edge) // 2) + min(n, edge)) for n in array.shape)
    return np.ascontiguousarray(array[slices])


def _score(clean: np.ndarray, test: np.ndarray, data_range: float, seconds: float | None, params: str) -> Score:
    return Score(psnr(clean, test, data_range), ssim3d(clean, test, data_range), seconds, params)


def run_setting(token: str, clean: np.ndarray, geometry: Geometry, data_range: float, modality: str,
                methods: list[str], denoiser: Denoiser | None, bm4d_crop: int, seed: int
                ) -> tuple[dict[str, Score], list[tuple[str, np.ndarray]]]:
    """Scores every method on one noise setting.

    Args:
        clean: the clean crop, float32 (z, y, x); ``geometry`` only travels with it.
        data_range: the normalised range; noise SD, PSNR and SSIM are relative to it.
        methods: names from ``BASELINES`` and/or ``MODEL``, in table order.
        bm4d_crop: run BM4D on this centred cube of the crop only (0: all of it).

    Returns:
        ``(scores by row name, (label, array) panels for a preview: noisy, each method, clean)``.
    """
    kind, fraction = parse_setting(token)
    level = fraction if kind == "speckle" else fraction * data_range  # speckle is relative, as in evaluate
    noisy = make_noise(kind, level)(clean, np.random.default_rng(seed))
    # "True σ" for Gaussian and Rician is the model's parameter (for Rician the SD of noisy − clean is not
    # σ: the modulus is biased); for correlated or multiplicative noise the SD actually added.
    true_sd = level if kind in ("gaussian", "rician") else float(np.std(noisy - clean))
    scores = {"noisy input": _score(clean, noisy, data_range, None, "")}
    panels = [("noisy", noisy)]
    for name in methods:
        print(f"  {token}: {name} …", file=sys.stderr, flush=True)
        if name == MODEL:
            started = time.perf_counter()
            result = denoiser.denoise(Volume(noisy, geometry, source=token), modality=modality)
            seconds, out = time.perf_counter() - started, result.volume.array
            row = f"{denoiser.name} (blind)"
            scores[row] = _score(clean, out, data_range, seconds, f"estimated σ {result.estimated_sigma / data_range:.2%}")
            if bm4d_crop and BM4D in methods:
                # The same output scored on BM4D's voxels, so the two can be compared like for like.
                scores[f"{row}, centre {bm4d_crop}³"] = _score(
                    centre_crop(clean, bm4d_crop), centre_crop(out, bm4d_crop), data_range, None, "")
        else:
            sub_clean, sub_noisy = (clean, noisy) if name != BM4D else (centre_crop(clean, bm4d_crop),
                                                                        centre_crop(noisy, bm4d_crop))
            started = time.perf_counter()
            out, params = BASELINES[name](sub_noisy, sub_clean, true_sd, data_range)
            seconds = time.perf_counter() - started
            row = f"{name}, centre {bm4d_crop}³" if name == BM4D and bm4d_crop else name
            scores[row] = _score(sub_clean, out, data_range, seconds, params)
        panels.append((row, out))
    panels.append(("clean", clean))
    return scores, panels


def _cell(score: Score | None) -> str:
    if score is None:
        return "–"
    text = f"{score.psnr:.1f} / {score.ssim:.3f}".replace(" 0.", " .")  # GUIDE §7 style: 36.2 / .975 / 1.6
    if score.seconds is None:
        return text
    return f"{text} / {score.seconds:.1f}" if score.seconds < 100 else f"{text} / {score.seconds:.0f}"


def report(results: dict[str, dict[str, Score]], args: argparse.Namespace, source: str, shape: tuple,
           data_range: float, modality: str, model: str, device: str, preview: tuple[str, str] | None) -> str:
    """The markdown section: context, the table (methods × settings), chosen parameters, preview.

    ``preview`` is ``(png path, panel labels)`` when a PNG was written.
    """
    rows = list(dict.fromkeys(row for scores in results.values() for row in scores))
    lines = [
        "## Quality",
        "",
        f"- Clean volume: {source}, {'×'.join(str(n) for n in shape[::-1])} voxels (x×y×z), normalised as "
        f"{modality.upper()}; data range {data_range:g} (noise SD and PSNR are relative to it)",
        f"- Model: `{model}`, blind (estimates the noise itself); device {device}"
        f"{', test-time flips' if args.flips else ''}",
        f"- Machine: {machine_line(torch.__version__, f'{torch.get_num_threads()} torch threads')}",
        f"- Date: {utc_now()}; noise seed {args.seed}",
        f"- Command: `{command_line()}`",
        "",
        "Each cell: PSNR dB / 3D SSIM / seconds.",
        "",
        "| method | " + " | ".join(setting_label(t) for t in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    lines += [f"| {row} | " + " | ".join(_cell(results[t].get(row)) for t in results) + " |" for row in rows]
    lines += ["", "Parameters chosen (oracle-tuned on the clean volume, or told the true σ):", ""]
    for row in rows:
        chosen = [f"{setting_label(t)}: {results[t][row].params}" for t in results
                  if row in results[t] and results[t][row].params]
        if chosen:
            lines.append(f"- {row}: " + "; ".join(chosen))
    lines += ["", "Caveats: the `best …` baselines pick their parameters with the clean image and their seconds "
              "include the whole parameter search; NLM and BM4D are told the true noise SD; the model is told "
              "nothing. Seconds are wall time on this machine (baselines use their own threading)."]
    if args.bm4d_crop and BM4D in BASELINES and BM4D not in args.skip_resolved:
        lines.append(f"\nBM4D ran on the centre {args.bm4d_crop}³ of the crop only, to save time; the model row "
                     f"marked 'centre {args.bm4d_crop}³' scores the model's output on those same voxels.")
    if not bm4d_available():
        lines.append("\nBM4D was not run: `pip install bm4d` to include it.")
    if preview:
        png, labels = preview
        lines += ["", f"![middle axial slices, {setting_label(args.preview)}]({Path(png).name})", "",
                  f"Panels, left to right: {labels}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="PSNR / SSIM / seconds of the model (blind) and the classical baselines on a clean volume "
        "with known added noise, one markdown table (methods × noise settings).",
        epilog=f"Baselines: {', '.join(BASELINES)}. BM4D (pip bm4d) is included when importable; it takes "
        "about 3 minutes per 128³ on 2 cores, hence --bm4d-crop.")
    parser.add_argument("--clean", type=Path, help="clean volume (default: the MNI152 T1 template shipped with nilearn)")
    parser.add_argument("--crop", type=int, default=128, help="centred cube edge to evaluate on (0: whole volume; default 128)")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), metavar="KIND:FRACTION",
                        help=f"noise settings, SD as a fraction of the range (default: {' '.join(DEFAULT_SETTINGS)}); "
                        f"kinds: {', '.join(NOISE_MODELS)}")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                        help="methods to leave out, by name or part of it, case-insensitive (e.g. bm4d, "
                        "'non-local means', model)")
    parser.add_argument("--bm4d-crop", type=int, default=0, metavar="N",
                        help="run BM4D on the centre N³ of the crop only, and say so in the table (0: the whole crop)")
    parser.add_argument("--model", help="registry name or .safetensors file (default: the default model)")
    parser.add_argument("--device", default="auto", help="where the model runs (auto, cpu, cuda, mps; default auto)")
    parser.add_argument("--tile", type=int, default=None, help="largest tile edge (default: the library's)")
    parser.add_argument("--flips", action="store_true", help="test-time flips for the model (8x slower)")
    parser.add_argument("--modality", default="auto", choices=("auto", *MODALITIES), help="normalisation of the clean volume")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (the same noise for every method)")
    parser.add_argument("--preview", default="gaussian:0.05", metavar="KIND:FRACTION",
                        help="setting whose middle slices go to quality_<KIND>_<FRACTION>.png beside --out "
                        "(default gaussian:0.05; 'none' for no PNG)")
    parser.add_argument("--out", type=Path, help="markdown file whose quality section is (re)written")
    args = parser.parse_args(argv)
    for token in args.settings:
        try:
            parse_setting(token)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    try:
        preview_setting = None if args.preview.lower() == "none" else parse_setting(args.preview)
    except argparse.ArgumentTypeError as error:
        parser.error(f"--preview: {error}")
    if preview_setting and preview_setting not in [parse_setting(t) for t in args.settings]:
        print(f"note: --preview {args.preview} is not among --settings; no PNG is written", file=sys.stderr)
    if args.crop < 0 or args.bm4d_crop < 0 or (args.crop and args.bm4d_crop > args.crop):
        parser.error(f"--crop must be >= 0 and --bm4d-crop in [0, --crop], got {args.crop} and {args.bm4d_crop}")

    candidates = [*BASELINES, MODEL]
    args.skip_resolved = set()
    for pattern in args.skip:
        matched = [name for name in candidates if pattern.lower() in name.lower()]
        if not matched:
            parser.error(f"--skip {pattern!r} matches no method; methods: {', '.join(candidates)}")
        args.skip_resolved.update(matched)
    methods = [name for name in candidates if name not in args.skip_resolved]

    path = args.clean or mni152_t1_path()
    volume = read_volume(path)
    clean = centre_crop(volume.array.astype(np.float32), args.crop)
    modality = guess_modality(clean, volume.modality if args.modality == "auto" else args.modality)
    data_range = IntensityNormalizer.fit(clean, modality).scale  # the range evaluate and the model use
    denoiser = Denoiser(args.model, device=args.device, tile_size=args.tile, flips=args.flips) if MODEL in methods else None
    if denoiser is not None:
        # Pays one-off costs (oneDNN kernel choice, lazy imports) before the first timed call.
        denoiser.denoise(Volume(centre_crop(clean, 32), volume.geometry), modality=modality)
    source = "MNI152 T1 1 mm template (nilearn)" if args.clean is None else f"`{path.name}`"
    source += f", centre {args.crop}³ crop" if args.crop else ""

    results, preview = {}, None
    for token in args.settings:
        print(f"{token} …", file=sys.stderr, flush=True)
        # Geometry plays no part in denoising, so the crop keeps the whole volume's.
        results[token], panels = run_setting(token, clean, volume.geometry, data_range, modality, methods,
                                             denoiser, args.bm4d_crop, args.seed)
        if args.out and parse_setting(token) == preview_setting:
            kind, fraction = preview_setting
            png = args.out.parent / f"quality_{kind}_{fraction:g}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            # All panels in the clean slice's window, so brightness is comparable with the reference.
            low, high = np.percentile(clean[clean.shape[0] // 2], [1, 99])
            comparison_png(png, panels, window=(low, high) if high > low else None)
            preview = (str(png), comparison_labels(panels))
    section = report(results, args, source, clean.shape, data_range, modality,
                     denoiser.name if denoiser else "(skipped)", str(denoiser.device) if denoiser else "–", preview)
    print(section)
    if args.out:
        write_section(args.out, "quality", section)
        print(f"wrote the quality section of {args.out}" + (f" and {preview[0]}" if preview else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
