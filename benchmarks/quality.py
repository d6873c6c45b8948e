"""Denoising quality against classical baselines: PSNR / SSIM / foreground SSIM / seconds per method and setting.

Several clean volumes (default: the MNI152 T1 template that ships with nilearn, and two held-out real
volumes from ``--data``: an MR brain and a CT abdomen) get known noise per setting; the classical baselines
of ``MedicalDenoiseLib.evaluation.baselines.BASELINES`` and every shipped model denoise it, and everything is scored
against the clean volume. The baselines are at their best: the ``best …`` ones are tuned on the clean image
(oracle), NLM, DIPY NLM and BM4D are told the true noise SD. The models are blind: they estimate the noise.
One markdown table per volume (methods × settings) and one PNG per volume (outputs above their residuals).

The real volumes are not noise-free: their own noise stays in the "clean" reference, so PSNR there is capped
and a method that removes the original noise too is scored as if it had erased detail. Compare methods
with each other on them, not with the template's numbers.

Usage:
    python benchmarks/quality.py --out docs/benchmarks.md
    python benchmarks/quality.py --crop 48 --settings gaussian:0.05 --skip "non-local means" --model tiny.safetensors
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import default_data_dir, ensure_library_importable, write_section

from quality_report import Score, report, write_preview
from quality_volumes import (CT_SETTINGS, DEFAULT_SETTINGS, DEFAULT_VOLUMES, MR_SETTINGS, CleanVolume, load_clean,
                             parse_setting, resolve_volumes, setting_label)

ensure_library_importable()
from MedicalDenoiseLib.evaluation.baselines import BASELINES  # noqa: E402
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.metrics import psnr, ssim3d  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.inference.normalization import MODALITIES  # noqa: E402
from MedicalDenoiseLib.io.volume import Volume  # noqa: E402
from MedicalDenoiseLib.models.registry import list_models  # noqa: E402
from MedicalDenoiseLib.noise.image_domain import NOISE_MODELS, make_noise  # noqa: E402

BM4D = "BM4D (true σ)"
OPTIONAL_BASELINES = ("bm4d", "dipy")  # listed in BASELINES only when their packages import
MODEL_PREFIX = "model "  # method ids of the models: "model autoencoder-v1"; `--skip model` leaves all out
RUNTIME_EPILOG = (
    "Runtime on 2 CPU cores (scaled by voxel count from 32³ runs; per 128³ and setting BM4D takes about 3 "
    "minutes, scikit-image and DIPY NLM about 30 s each): the default run (3 volumes × 6 settings, every "
    "baseline, BM4D on the whole crops, one model) takes about 45 minutes, BM4D about 25 of them; with "
    "--bm4d-crop 64 about 20 minutes; with --skip bm4d 'non-local means' dipy about 10. Each further model "
    "adds under a minute.")


def _score(clean: np.ndarray, test: np.ndarray, data_range: float, mask: np.ndarray | None,
           seconds: float | None, params: str) -> Score:
    inside = mask is not None and mask.any()
    return Score(psnr(clean, test, data_range), ssim3d(clean, test, data_range),
                 ssim3d(clean, test, data_range, mask=mask) if inside else None, seconds, params)


def add_noise(token: str, clean: np.ndarray, data_range: float, seed: int) -> tuple[np.ndarray, float]:
    """The noisy copy and the "true σ" the σ-told baselines get, in the volume's units.

    For Gaussian and Rician that is the noise model's parameter (for Rician the SD of noisy − clean is not σ:
    the modulus is biased); for correlated or multiplicative noise the SD actually added.
    """
    kind, fraction = parse_setting(token)
    level = fraction if kind == "speckle" else fraction * data_range  # speckle is relative, as in evaluate
    noisy = make_noise(kind, level)(clean, np.random.default_rng(seed))
    return noisy, level if kind in ("gaussian", "rician") else float(np.std(noisy - clean))


def run_model(denoiser: Denoiser, volume: CleanVolume, noisy: np.ndarray, token: str, bm4d_crop: int,
              with_bm4d: bool) -> tuple[dict[str, Score], np.ndarray, str]:
    """One blind model run: its score (and on BM4D's crop when BM4D ran on one), output and row name."""
    started = time.perf_counter()
    # Geometry plays no part in denoising, so the crop keeps the whole volume's.
    result = denoiser.denoise(Volume(noisy, volume.geometry, source=token), modality=volume.modality)
    seconds, out = time.perf_counter() - started, result.volume.array
    row = f"{denoiser.name} (blind)"
    scores = {row: _score(volume.array, out, volume.data_range, volume.foreground, seconds,
                          f"estimated σ {result.estimated_sigma / volume.data_range:.2%}")}
    if bm4d_crop and with_bm4d:
        # The same output scored on BM4D's voxels, so the two can be compared like for like.
        sub_mask = None if volume.foreground is None else centre_crop(volume.foreground, bm4d_crop)
        scores[f"{row}, centre {bm4d_crop}³"] = _score(centre_crop(volume.array, bm4d_crop),
                                                       centre_crop(out, bm4d_crop), volume.data_range, sub_mask,
                                                       None, "")
    return scores, out, row


def run_baseline(name: str, volume: CleanVolume, noisy: np.ndarray, true_sd: float, kind: str, bm4d_crop: int
                 ) -> tuple[Score, np.ndarray, np.ndarray, str]:
    """One baseline: its score, output, the noisy input it saw (a crop for BM4D) and its row name."""
    clean, mask = volume.array, volume.foreground
    if name == BM4D and bm4d_crop:
        clean, noisy = centre_crop(clean, bm4d_crop), centre_crop(noisy, bm4d_crop)
        mask = None if mask is None else centre_crop(mask, bm4d_crop)
    started = time.perf_counter()
    out, params = BASELINES[name](noisy, clean, true_sd, volume.data_range, noise_kind=kind)
    seconds = time.perf_counter() - started
    row = f"{name}, centre {bm4d_crop}³" if name == BM4D and bm4d_crop else name
    return _score(clean, out, volume.data_range, mask, seconds, params), out, noisy, row


def run_setting(token: str, volume: CleanVolume, methods: list[str], denoisers: dict[str, Denoiser],
                bm4d_crop: int, seed: int) -> tuple[dict[str, Score], list[tuple], list[str]]:
    """Scores every method on one noise setting of one volume.

    Args:
        methods: names from ``BASELINES`` and model ids (``MODEL_PREFIX`` + name), in table order.
        denoisers: the loaded models by method id.
        bm4d_crop: run BM4D on this centred cube of the crop only (0: all of it).

    Returns:
        ``(scores by row name, preview columns (label, output, noisy input it saw), failures)``; a method that
        raises is reported in the failures and the run goes on.
    """
    kind, _ = parse_setting(token)
    noisy, true_sd = add_noise(token, volume.array, volume.data_range, seed)
    scores = {"noisy input": _score(volume.array, noisy, volume.data_range, volume.foreground, None, "")}
    columns, failures = [("noisy", noisy, noisy)], []
    for name in methods:
        print(f"  {volume.spec.key} {token}: {name} …", file=sys.stderr, flush=True)
        try:
            if name in denoisers:
                model_scores, out, row = run_model(denoisers[name], volume, noisy, token, bm4d_crop, BM4D in methods)
                scores.update(model_scores)
                columns.append((row, out, noisy))
            else:
                score, out, seen, row = run_baseline(name, volume, noisy, true_sd, kind, bm4d_crop)
                scores[row] = score
                columns.append((row, out, seen))
        except Exception as error:  # noqa: BLE001 - one failing method must not lose an hour of results
            failures.append(f"{name} on {setting_label(token)}: {type(error).__name__}: {error}")
            print(f"  failed: {failures[-1]}", file=sys.stderr)
    columns.append(("clean", volume.array, None))
    return scores, columns, failures


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="PSNR / SSIM / foreground SSIM / seconds of the shipped models (blind) and the classical "
        "baselines on clean volumes with known added noise: one markdown table per volume (methods × noise "
        "settings) and one PNG per volume.",
        epilog=f"Baselines: {', '.join(BASELINES)}. BM4D (pip bm4d) and DIPY NLM (pip dipy) are included when "
        f"importable. {RUNTIME_EPILOG}")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="folder of the real volumes (default: ../shared/data beside the checkout, if it exists)")
    parser.add_argument("--volumes", nargs="+", default=[spec.key for spec in DEFAULT_VOLUMES],
                        choices=[spec.key for spec in DEFAULT_VOLUMES], metavar="NAME",
                        help="which default volumes to run (default: all of "
                        f"{', '.join(spec.key for spec in DEFAULT_VOLUMES)}); a missing file is skipped with a note")
    parser.add_argument("--clean", type=Path, help="run this one clean volume instead of the default set")
    parser.add_argument("--crop", type=int, default=None,
                        help="centred cube edge for every volume (0: whole volumes; default: per volume, MNI 128³, "
                        "brain2 all slices × 128², CT 96³; --clean 128³)")
    parser.add_argument("--settings", nargs="+", default=None, metavar="KIND:FRACTION",
                        help="noise settings for every volume, SD as a fraction of the range (default: MR "
                        f"{' '.join(MR_SETTINGS)}; CT {' '.join(CT_SETTINGS)}); kinds: {', '.join(NOISE_MODELS)}")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                        help="methods to leave out, by name or part of it, case-insensitive (e.g. bm4d, "
                        "'non-local means', dipy, model, autoencoder)")
    parser.add_argument("--bm4d-crop", type=int, default=0, metavar="N",
                        help="run BM4D on the centre N³ of each crop only, and say so in the table "
                        "(0: the whole crop)")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="registry names or .safetensors files, each run blind (default: every model in the "
                        "registry)")
    parser.add_argument("--model", help="one model (registry name or .safetensors file); same as --models NAME")
    parser.add_argument("--device", default="auto", help="where the models run (auto, cpu, cuda, mps; default auto)")
    parser.add_argument("--tile", type=int, default=None, help="largest tile edge (default: the library's)")
    parser.add_argument("--flips", action="store_true", help="test-time flips for the models (8x slower)")
    parser.add_argument("--modality", default="auto", choices=("auto", *MODALITIES),
                        help="normalisation of every volume (default: per volume; --clean: from the file)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (the same noise for every method)")
    parser.add_argument("--preview", default="gaussian:0.05", metavar="KIND:FRACTION",
                        help="setting whose middle slices go to quality_<VOLUME>_<KIND>_<FRACTION>.png beside --out "
                        "(default gaussian:0.05; 'none' for no PNG)")
    parser.add_argument("--out", type=Path, help="markdown file whose quality section is (re)written")
    args = parser.parse_args(argv)
    for token in args.settings or []:
        try:
            parse_setting(token)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    try:
        args.preview_setting = None if args.preview.lower() == "none" else parse_setting(args.preview)
    except argparse.ArgumentTypeError as error:
        parser.error(f"--preview: {error}")
    if args.crop is not None and (args.crop < 0 or args.bm4d_crop < 0 or (args.crop and args.bm4d_crop > args.crop)):
        parser.error(f"--crop must be >= 0 and --bm4d-crop in [0, --crop], got {args.crop} and {args.bm4d_crop}")
    if args.bm4d_crop < 0:
        parser.error(f"--bm4d-crop must be >= 0, got {args.bm4d_crop}")
    if args.model and args.models:
        parser.error("give either --model NAME or --models NAME ..., not both")
    args.models = [args.model] if args.model else (args.models or [entry.name for entry in list_models()])
    candidates = [*BASELINES, *(MODEL_PREFIX + name for name in args.models)]
    args.skip_resolved = set()
    for pattern in args.skip:
        matched = [name for name in candidates if pattern.lower() in name.lower()]
        if not matched and pattern.lower() in OPTIONAL_BASELINES:
            continue  # skipping a baseline that is not installed is what the user wants anyway
        if not matched:
            parser.error(f"--skip {pattern!r} matches no method; methods: {', '.join(candidates)}")
        args.skip_resolved.update(matched)
    args.methods = [name for name in candidates if name not in args.skip_resolved]
    return args


def load_denoisers(args: argparse.Namespace, warm_up: CleanVolume | None) -> dict[str, Denoiser]:
    """The models to run, by method id, each warmed up once (oneDNN kernel choice, lazy imports) so the first
    timed call does not pay for it."""
    denoisers = {}
    for method in args.methods:
        if not method.startswith(MODEL_PREFIX):
            continue
        denoiser = Denoiser(method[len(MODEL_PREFIX):], device=args.device, tile_size=args.tile, flips=args.flips)
        if warm_up is not None:
            denoiser.denoise(Volume(centre_crop(warm_up.array, 32), warm_up.geometry), modality=warm_up.modality)
        denoisers[method] = denoiser
    return denoisers


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    chosen, skipped = resolve_volumes(args)
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)
    if not chosen:
        raise SystemExit("no clean volume to run: " + "; ".join(skipped))
    volumes = []
    for spec, path in chosen:
        modality = args.modality if args.modality != "auto" else spec.modality or "auto"
        volume = load_clean(spec, path, args.crop, modality)
        volume.settings = list(args.settings or DEFAULT_SETTINGS[volume.modality])
        volumes.append(volume)
    if args.preview_setting and not any(args.preview_setting in map(parse_setting, v.settings) for v in volumes):
        print(f"note: --preview {args.preview} is not among any volume's settings; no PNG is written", file=sys.stderr)
    denoisers = load_denoisers(args, volumes[0])
    bm4d_ran = BM4D in args.methods

    results, failures, previews = {}, {}, {}
    for volume in volumes:
        key = volume.spec.key
        results[key], failures[key] = {}, []
        for token in volume.settings:
            print(f"{key} {token} …", file=sys.stderr, flush=True)
            results[key][token], columns, failed = run_setting(token, volume, args.methods, denoisers,
                                                               args.bm4d_crop, args.seed)
            failures[key] += failed
            if args.out and parse_setting(token) == args.preview_setting:
                kind, fraction = args.preview_setting
                png = args.out.parent / f"quality_{volume.spec.stem}_{kind}_{fraction:g}.png"
                previews[key] = (str(png), write_preview(png, volume, columns, columns[0][1]))
    section = report(volumes, results, failures, previews, skipped, args, denoisers, bm4d_ran)
    print(section)
    if args.out:
        write_section(args.out, "quality", section)
        written = ", ".join(png for png, _ in previews.values())
        print(f"wrote the quality section of {args.out}" + (f" and {written}" if written else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
