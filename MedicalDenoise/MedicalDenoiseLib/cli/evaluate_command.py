"""``medical-denoise evaluate CLEAN``: add known noise to a clean volume and compare the model with classical
denoisers in one table (PSNR and SSIM against the clean volume, wall time)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..evaluation.baselines import BASELINES
from ..evaluation.crops import centre_crop
from ..inference.denoiser import Denoiser
from ..errors import MedicalDenoiseError
from ..io.reading import read_volume
from ..evaluation.metrics import psnr, ssim3d
from ..noise.image_domain import NOISE_MODELS, make_noise
from ..inference.normalization import MODALITIES, IntensityNormalizer, guess_modality
from ..io.volume import Volume
from .denoise_command import add_model_options

__all__ = ["add_parser", "run", "evaluate"]


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="compare the model with classical denoisers on a clean volume",
                       description="Adds noise to CLEAN, denoises it with the model (blind) and the baselines, "
                       "and prints PSNR / SSIM / seconds. Baselines are tuned with the clean image or told the true "
                       "noise, so they are at their best; the model is not.")
    p.add_argument("clean", type=Path, help="a clean (low-noise) volume")
    p.add_argument("--noise", default="gaussian", choices=tuple(NOISE_MODELS))
    p.add_argument("--sigma", type=float, default=0.05, help="noise SD as a fraction of the intensity range (speckle: relative)")
    p.add_argument("--modality", default="auto", choices=("auto", *MODALITIES))
    p.add_argument("--crop", type=int, default=0, help="evaluate on a centred cube of this edge (0: whole volume)")
    p.add_argument("--baselines", nargs="*", default=None, metavar="NAME",
                   help=f"subset of: {', '.join(BASELINES)} (default: all available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the table as markdown here")
    add_model_options(p)
    p.set_defaults(run=run)


def evaluate(clean_volume, noise: str, sigma: float, denoiser: Denoiser, baselines: list[str], seed: int = 0,
             modality: str = "auto", crop: int = 0) -> list[tuple[str, float, float, float]]:
    """Rows of (method, PSNR dB, SSIM, seconds), the noisy input first.

    PSNR and SSIM use the normalised intensity range (CT: 2000 HU; MR/US: the 99.5th percentile) as the
    data range, the same range the noise level is a fraction of.
    """
    clean = centre_crop(clean_volume.array.astype(np.float32), crop)
    chosen = guess_modality(clean, clean_volume.modality if modality == "auto" else modality)
    data_range = IntensityNormalizer.fit(clean, chosen).scale
    level = sigma if noise == "speckle" else sigma * data_range
    noisy = make_noise(noise, level)(clean, np.random.default_rng(seed))
    rows = [("noisy input", psnr(clean, noisy, data_range), ssim3d(clean, noisy, data_range), 0.0)]
    # Baselines that take σ are told the noise model's own level; speckle has none in image units.
    true_sd = float(np.std(noisy - clean)) if noise == "speckle" else level
    for name in baselines:
        started = time.perf_counter()
        out, params = BASELINES[name](noisy, clean, true_sd, data_range, noise_kind=noise)
        seconds = time.perf_counter() - started
        rows.append((f"{name} ({params})" if params else name, psnr(clean, out, data_range),
                     ssim3d(clean, out, data_range), seconds))
    # Geometry plays no part in denoising, so a crop keeps the whole volume's for simplicity.
    result = denoiser.denoise(Volume(noisy, clean_volume.geometry, source=clean_volume.source), modality=chosen)
    rows.append((f"{denoiser.name} (blind)", psnr(clean, result.volume.array, data_range),
                 ssim3d(clean, result.volume.array, data_range), result.seconds))
    return rows


def run(args) -> int:
    clean = read_volume(args.clean)
    names = list(BASELINES) if args.baselines is None else args.baselines
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise MedicalDenoiseError(f"unknown baseline {unknown[0]!r}; available: {', '.join(BASELINES)}")
    denoiser = Denoiser(args.model, device=args.device, tile_size=args.tile, flips=args.flips, refine=not args.no_refine)
    rows = evaluate(clean, args.noise, args.sigma, denoiser, names, args.seed, args.modality, args.crop)
    title = (f"{args.clean.name}{f' (centre {args.crop}³)' if args.crop else ''}, {args.noise} noise "
             f"SD {args.sigma:.1%}, seed {args.seed}")
    lines = [f"**{title}**", "", "| method | PSNR dB | SSIM | seconds |", "|---|---|---|---|"]
    lines += [f"| {m} | {p:.2f} | {s:.3f} | {t:.1f} |" for m, p, s, t in rows]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0
