"""The product's targets beyond PSNR, measured on the held-out MNI152 T1 template.

1. **Small lesions survive.** Spheres of radius 2 voxels at 8 % contrast go into the clean crop; the same
   5 % Gaussian noise is added with and without them and both are denoised. The difference of the two
   outputs is what the method kept of the lesions: its mean over the sphere voxels divided by the inserted
   contrast is the *amplitude kept*. CNR is that kept contrast over the SD of (output − clean) in shells 3–6
   voxels around the lesions; *CNR gain* divides it by the noisy input's CNR (contrast / noise SD).
2. **The residual holds no anatomy.** Correlation of the removed part (input − output) with the clean
   image's detail (``metrics.residual_structure_correlation``), at 3, 5 and 10 % noise.
3. **Texture without invention.** High-frequency power relative to the clean image
   (``metrics.high_frequency_power_ratio``: below 1 is over-smoothed), and the SD of (output − clean) in the
   clean image's flattest foreground voxels and in a uniform cube, where any structure is invented.
4. **Speed against BM4D** on the same crop (BM4D told the true σ; the models blind).

Usage:
    python benchmarks/targets.py --out docs/benchmarks.md
    python benchmarks/targets.py --crop 48 --lesions 6 --skip bm4d      # a quick look
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from _common import command_line, ensure_library_importable, machine_line, utc_now, publish

ensure_library_importable()
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.baselines import BASELINES  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.evaluation.metrics import high_frequency_power_ratio, psnr, residual_structure_correlation  # noqa: E402
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer  # noqa: E402
from MedicalDenoiseLib.models.registry import default_model_name, list_models  # noqa: E402
from MedicalDenoiseLib.io.sample_data import mni152_t1_path  # noqa: E402
from MedicalDenoiseLib.io.volume import Volume  # noqa: E402

BM4D = "BM4D (true σ)"
DIFFUSION = "anisotropic diffusion (best of 5)"
LESION_RADIUS = 2.0
LESION_CONTRAST = 0.08  # of the data range
LESION_NOISE = 0.05
RESIDUAL_LEVELS = (0.03, 0.05, 0.10)

Method = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
"""``(noisy, clean, true σ) -> output``; the clean image is used only by oracle-tuned baselines."""


@dataclass
class LesionScore:
    kept: float  # share of the inserted contrast left in (with − without)
    cnr_gain: float  # output CNR / input CNR
    seconds: float  # one denoising run


def ball_offsets(radius: float) -> np.ndarray:
    """Integer (dz, dy, dx) offsets within ``radius`` of the centre voxel (33 for radius 2)."""
    r = int(np.floor(radius))
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return grid[(grid**2).sum(1) <= radius**2 + 1e-9]


def place_lesions(foreground: np.ndarray, count: int, radius: float, rng: np.random.Generator,
                  spacing: float = 12.0) -> np.ndarray:
    """Up to ``count`` lesion centres (z, y, x) inside ``foreground``, ``spacing`` voxels apart and clear of
    the border, so the shells used for CNR do not overlap other lesions."""
    margin = int(np.ceil(radius)) + 7
    inner = np.zeros_like(foreground)
    inner[margin:-margin, margin:-margin, margin:-margin] = True
    candidates = np.argwhere(foreground & inner)
    rng.shuffle(candidates)
    centres: list[np.ndarray] = []
    for point in candidates:
        if all(np.sum((point - c) ** 2) >= spacing**2 for c in centres):
            centres.append(point)
            if len(centres) == count:
                break
    if not centres:
        raise ValueError("no room for lesions: the crop's foreground is too small")
    return np.array(centres)


def lesion_masks(shape: tuple[int, ...], centres: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The lesion voxels and the shells (3–6 voxels from a centre) where the local noise is measured."""
    lesions = np.zeros(shape, bool)
    for dz, dy, dx in ball_offsets(radius):
        lesions[centres[:, 0] + dz, centres[:, 1] + dy, centres[:, 2] + dx] = True
    near = np.zeros(shape, bool)
    near[tuple(centres.T)] = True
    distance = ndimage.distance_transform_edt(~near)
    return lesions, (distance >= 3) & (distance <= 6)


def lesion_score(clean: np.ndarray, lesion_map: np.ndarray, lesions: np.ndarray, shells: np.ndarray,
                 noisy: np.ndarray, out_with: np.ndarray, out_without: np.ndarray) -> tuple[float, float]:
    """(amplitude kept, CNR gain) of one method; see the module docstring."""
    inserted = float(lesion_map[lesions].mean())
    kept = float((out_with - out_without)[lesions].mean()) / inserted
    noise_in = float(np.std((noisy - clean)[shells]))
    noise_out = float(np.std((out_without - clean)[shells]))
    cnr_in, cnr_out = inserted / noise_in, kept * inserted / noise_out
    return kept, cnr_out / cnr_in


def flat_mask(clean: np.ndarray, foreground: np.ndarray, share: float = 0.2) -> np.ndarray:
    """The flattest ``share`` of the foreground: lowest gradient magnitude of the clean image."""
    gradient = ndimage.gaussian_gradient_magnitude(clean, 1.0)
    return foreground & (gradient <= np.percentile(gradient[foreground], share * 100))


def model_method(denoiser: Denoiser, geometry) -> Method:
    def run(noisy: np.ndarray, clean: np.ndarray, sigma: float) -> np.ndarray:
        return denoiser.denoise(Volume(noisy, geometry), modality="mr").volume.array
    return run


def baseline_method(name: str, data_range: float) -> Method:
    def run(noisy: np.ndarray, clean: np.ndarray, sigma: float) -> np.ndarray:
        return BASELINES[name](noisy, clean, sigma, data_range)[0]
    return run


def timed(method: Method, noisy: np.ndarray, clean: np.ndarray, sigma: float) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = method(noisy, clean, sigma)
    return np.asarray(out, np.float32), time.perf_counter() - started


def measure(methods: dict[str, Method], clean: np.ndarray, data_range: float, lesion_count: int, seed: int,
            models: list[str]) -> dict:
    """Every number of the report, by section and method."""
    rng = np.random.default_rng(seed)
    foreground = clean > 0.25 * data_range
    centres = place_lesions(foreground, lesion_count, LESION_RADIUS, rng)
    lesions, shells = lesion_masks(clean.shape, centres, LESION_RADIUS)
    lesion_map = np.where(lesions, np.float32(LESION_CONTRAST * data_range), np.float32(0))
    sigma = LESION_NOISE * data_range
    noise = rng.normal(0, sigma, clean.shape).astype(np.float32)
    noisy, noisy_with = clean + noise, clean + lesion_map + noise
    flat = flat_mask(clean, foreground)
    cube = np.full((48, 48, 48), 0.5 * data_range, np.float32)
    noisy_cube = cube + rng.normal(0, sigma, cube.shape).astype(np.float32)
    results: dict = {"lesions": {}, "texture": {}, "residual": {}, "centres": len(centres),
                     "noisy": {"psnr": psnr(clean, noisy, data_range),
                               "hf": high_frequency_power_ratio(clean, noisy),
                               "flat_sd": float(np.std((noisy - clean)[flat]) / data_range),
                               "cube_sd": float(np.std(noisy_cube - cube) / data_range)}}
    for name, method in methods.items():
        print(f"  {name} …", file=sys.stderr, flush=True)
        out, seconds = timed(method, noisy, clean, sigma)
        out_with, _ = timed(method, noisy_with, clean + lesion_map, sigma)
        kept, gain = lesion_score(clean, lesion_map, lesions, shells, noisy, out_with, out)
        results["lesions"][name] = LesionScore(kept, gain, seconds)
        results["texture"][name] = {
            "psnr": psnr(clean, out, data_range), "hf": high_frequency_power_ratio(clean, out),
            "flat_sd": float(np.std((out - clean)[flat]) / data_range),
            "cube_sd": float(np.std(timed(method, noisy_cube, cube, sigma)[0] - cube) / data_range)}
        levels = {}
        for level in RESIDUAL_LEVELS:
            if level == LESION_NOISE:
                levels[level] = residual_structure_correlation(clean, noisy, out)
            elif name in models:  # the baselines' residuals at other levels cost minutes each; 5 % shows them
                other = clean + rng.normal(0, level * data_range, clean.shape).astype(np.float32)
                levels[level] = residual_structure_correlation(clean, other, timed(method, other, clean, level * data_range)[0])
        results["residual"][name] = levels
    return results


def verdicts(results: dict, models: list[str], default: str) -> list[str]:
    """Each target with the measured numbers and whether it is met."""
    lines = []
    score = results["lesions"].get(default)
    if score:
        met = score.kept >= 0.8 and score.cnr_gain >= 2.0
        lines.append(f"- Lesions ({default}): keeps {score.kept:.0%} of the amplitude (target ≥ 80 %), CNR ×"
                     f"{score.cnr_gain:.2f} (target ≥ 2): **{'met' if met else 'not met'}**")
    for name in models:
        worst = max(abs(v) for v in results["residual"][name].values())
        lines.append(f"- Residual anatomy ({name}): largest |correlation| {worst:.3f} (target ≤ 0.10): "
                     f"**{'met' if worst <= 0.10 else 'not met'}**")
    if BM4D in results["lesions"] and default in results["lesions"]:
        ratio = results["lesions"][BM4D].seconds / results["lesions"][default].seconds
        lines.append(f"- Speed ({default} vs BM4D on the same crop): {ratio:.0f}× faster (target ≥ 50×): "
                     f"**{'met' if ratio >= 50 else 'not met'}**")
    for name in models:
        if name == default or "gan" not in name.lower():  # the texture target is the GAN's
            continue
        gan, ae = results["texture"][name], results["texture"][default]
        close = gan["psnr"] >= ae["psnr"] - 1.0
        sharper = gan["hf"] > ae["hf"]
        calm = gan["flat_sd"] <= 1.1 * ae["flat_sd"] and gan["cube_sd"] <= 1.1 * ae["cube_sd"]
        lines.append(f"- {name} against {default}: PSNR {gan['psnr'] - ae['psnr']:+.2f} dB (target ≥ −1), "
                     f"high-frequency power {gan['hf']:.2f} vs {ae['hf']:.2f} of the clean image's (target: more), "
                     f"flat-region error {gan['flat_sd']:.2%} vs {ae['flat_sd']:.2%} and uniform-cube SD "
                     f"{gan['cube_sd']:.2%} vs {ae['cube_sd']:.2%} (target: at most 10 % above): "
                     f"**{'met' if close and sharper and calm else 'not met'}**")
    return lines


def report(results: dict, args: argparse.Namespace, shape: tuple, models: list[str], default: str) -> str:
    noisy = results["noisy"]
    lines = [
        "## Targets: lesions, residual, texture, speed",
        "",
        f"- Clean volume: MNI152 T1 1 mm template (nilearn, held out from training), centre {args.crop}³ crop "
        f"({'×'.join(map(str, shape))}); models blind, BM4D told the true σ, anisotropic diffusion oracle-tuned",
        f"- {results['centres']} lesions of radius {LESION_RADIUS:g} voxels at {LESION_CONTRAST:.0%} contrast, "
        f"Gaussian noise {LESION_NOISE:.0%} of the range, the same noise with and without them; seed {args.seed}",
        f"- Machine: {machine_line(torch.__version__, f'{torch.get_num_threads()} torch threads')}",
        f"- Date: {utc_now()}",
        f"- Command: `{command_line()}`",
        "",
        "| method | lesion amplitude kept | CNR gain | PSNR dB (5 %) | high-freq. power / clean | flat-region error | "
        "uniform-cube SD | residual corr. 3 / 5 / 10 % | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| noisy input | 100 % | ×1 | {noisy['psnr']:.1f} | {noisy['hf']:.2f} | {noisy['flat_sd']:.2%} | "
        f"{noisy['cube_sd']:.2%} | – | – |",
    ]
    for name, score in results["lesions"].items():
        texture, residual = results["texture"][name], results["residual"][name]
        corr = " / ".join(f"{residual[level]:+.3f}" if level in residual else "–" for level in RESIDUAL_LEVELS)
        lines.append(f"| {name} | {score.kept:.0%} | ×{score.cnr_gain:.2f} | {texture['psnr']:.1f} | "
                     f"{texture['hf']:.2f} | {texture['flat_sd']:.2%} | {texture['cube_sd']:.2%} | {corr} | "
                     f"{score.seconds:.1f} |")
    lines += ["", "Errors and SDs are in % of the data range. Seconds: one run on the crop.", ""]
    lines += verdicts(results, models, default)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="About 10 minutes on 2 cores with BM4D on the default 96³ crop.")
    parser.add_argument("--crop", type=int, default=96, help="centred cube edge of the template (default 96)")
    parser.add_argument("--lesions", type=int, default=24, help="number of lesions (default 24)")
    parser.add_argument("--models", nargs="+", help="registry names or files (default: every shipped model)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("bm4d", "diffusion"), help="baselines to leave out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="markdown file whose targets section is (re)written")
    args = parser.parse_args(argv)
    if args.crop < 32 or args.lesions < 1:
        parser.error(f"--crop must be >= 32 and --lesions >= 1, got {args.crop} and {args.lesions}")

    volume = read_volume(mni152_t1_path())
    clean = centre_crop(volume.array.astype(np.float32), args.crop)
    data_range = IntensityNormalizer.fit(clean, "mr").scale
    names = args.models or sorted((e.name for e in list_models()), key=lambda n: n != default_model_name())
    methods: dict[str, Method] = {}
    for name in names:
        denoiser = Denoiser(name, device="cpu")
        denoiser.denoise(Volume(centre_crop(clean, 32), volume.geometry), modality="mr")  # one-off warm-up
        methods[denoiser.name] = model_method(denoiser, volume.geometry)
    models = list(methods)
    if "bm4d" not in args.skip and BM4D in BASELINES:
        methods[BM4D] = baseline_method(BM4D, data_range)
    if "diffusion" not in args.skip:
        methods[DIFFUSION] = baseline_method(DIFFUSION, data_range)
    results = measure(methods, clean, data_range, args.lesions, args.seed, models)
    section = report(results, args, clean.shape, models, models[0])  # the first (the default) is the reference
    publish(section, args.out, "targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
