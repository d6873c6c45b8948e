"""2D images through a model's planar twin, beside the same model's volumetric network on the same image:
quality on realistic noise with a reference, noise left and edges kept on real B-mode frames and MR
slices, and the time per image.

A 2D image is what an ultrasound frame, a single CT or MR slice or a screenshot-sized export is. Without a
twin, the volumetric network runs on the slice padded to its depth multiple (four slices' work); the twin
does one slice's. The twin ships only if it is at least as good here.

Images with a reference are slices (three per volume, a quarter apart) of the realistic benchmark's
simulated acquisitions (benchmarks/realistic_acquisitions.py), from images no shipped model trained on,
plus white noise on the MNI152 template. Real images are the held-out B-mode frames (middle frame of each
sequence) and the middle slice of two held-out MR scans.

Usage:
    python benchmarks/planar.py autoencoder-v3 [--twin runs/x.safetensors] [--out ../docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import command_line, default_data_dir, ensure_library_importable, machine_line, publish, utc_now
from realistic_acquisitions import SETTINGS, SOURCES, acquire, prepare

ensure_library_importable()
from MedicalDenoiseLib.evaluation.baselines import curvature_anisotropic_diffusion  # noqa: E402
from MedicalDenoiseLib.evaluation.metrics import psnr, ssim3d  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import (  # noqa: E402
    edge_sharpness, flat_region_mask, flat_region_noise_sd, foreground_mask, strong_edge_mask,
)
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry, Volume  # noqa: E402
from MedicalDenoiseLib.models.model_files import load_model  # noqa: E402
from MedicalDenoiseLib.models.registry import open_model  # noqa: E402
from MedicalDenoiseLib.noise import noise_kind  # noqa: E402
from MedicalDenoiseLib.noise.realisation import realise  # noqa: E402

REFERENCE_SETTINGS = ("mni-kspace-1coil-0.03", "mni-kspace-4coil-0.06", "brain2-kspace-1coil-0.03",
                      "brain2-kspace-4coil-0.06", "ct-3mm-photons-2.5e4", "ct-thin-photons-2.5e5",
                      "us-speckle-fine", "us-speckle-coarse")
REAL_IMAGES = (("us_curvilinear_bk_plus.mha", "us"), ("us_curvilinear_ultrasonix_plus.mha", "us"),
               ("us_prostate_trus_phantom_plus.mha", "us"), ("mr_phantom_t1mprage_xa30i.nii.gz", "mr"),
               ("mr_chest_tfl3d_seg3d.nii.gz", "mr"))
DIFFUSION = (1.0, 5)  # Slicer's curvature anisotropic diffusion defaults: conductance 1, 5 iterations


def _slices(array: np.ndarray) -> list[np.ndarray]:
    if array.ndim == 2:
        return [array]
    n = array.shape[0]
    return [array[z] for z in sorted({n // 4, n // 2, (3 * n) // 4})]


def _plane(image: np.ndarray) -> Volume:
    return Volume(np.ascontiguousarray(image, dtype=np.float32), Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)))


def _methods(model: str, twin_file: str | None) -> dict[str, Denoiser]:
    volumetric = open_model(model)
    planar = load_model(twin_file) if twin_file else volumetric.planar
    if planar is None:
        raise SystemExit(f"{model} has no planar twin; give one with --twin")
    without = open_model(model)
    without.planar = None
    volumetric.planar = planar
    return {f"{model}, volumetric network on the slice": Denoiser(without, device="cpu"),
            f"{model}, planar twin": Denoiser(volumetric, device="cpu")}


def _reference_rows(methods, data: Path | None) -> list[str]:
    rows = []
    sources = {s.key: s for s in SOURCES}
    settings = {s.key: s for s in SETTINGS}
    cases = [(key, settings[key].source, settings[key].label) for key in REFERENCE_SETTINGS]
    cases.insert(2, ("mni-white-0.05", "mni", "white Gaussian, σ 5 %"))
    prepared = {}
    for key, source, label in cases:
        try:
            prepared.setdefault(source, prepare(sources[source], data))
        except FileNotFoundError as exc:
            print(f"skipped {key}: {exc}", flush=True)
            continue
        p = prepared[source]
        if key.startswith("mni-white"):
            realisation = realise(noise_kind("gaussian").fixed(sigma=0.05 * p.data_range), p.clean, np.random.default_rng(7))
        else:
            realisation = acquire(settings[key], p, seed=7)
        modality = sources[source].modality
        scores: dict[str, list[tuple[float, float]]] = {"input": []}
        for clean, noisy in zip(_slices(realisation.clean), _slices(realisation.noisy)):
            outputs = {"input": noisy}
            for name, denoiser in methods.items():
                outputs[name] = denoiser.denoise(_plane(noisy), modality=modality).volume.array
            outputs["Slicer's anisotropic diffusion"] = curvature_anisotropic_diffusion(noisy, *DIFFUSION)
            for name, out in outputs.items():
                scores.setdefault(name, []).append((psnr(clean, out, p.data_range), ssim3d(clean, out, p.data_range)))
        cells = [f"{np.mean([s[0] for s in v]):.2f} / {np.mean([s[1] for s in v]):.3f}" for v in scores.values()]
        best = max(range(1, len(cells)), key=lambda i: float(cells[i].split(" / ")[0]))
        cells[best] = f"**{cells[best]}**"
        rows.append(f"| {source} | {label} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def _real_rows(methods, data: Path | None) -> list[str]:
    rows = []
    for file, modality in REAL_IMAGES:
        path = data / file if data else None
        if path is None or not path.is_file():
            print(f"skipped {file}: not in {data}", flush=True)
            continue
        array = read_volume(path).array.astype(np.float32)
        image = array if array.ndim == 2 else array[array.shape[0] // 2]
        foreground = foreground_mask(IntensityNormalizer.fit(image, modality).normalize(image))
        flat, edges = flat_region_mask(image, foreground), strong_edge_mask(image, foreground)
        noise0, edge0 = flat_region_noise_sd(image, flat), edge_sharpness(image, edges)
        cells = []
        outputs = {name: d.denoise(_plane(image), modality=modality).volume.array for name, d in methods.items()}
        outputs["Slicer's anisotropic diffusion"] = curvature_anisotropic_diffusion(image, *DIFFUSION)
        for out in outputs.values():
            cells.append(f"{flat_region_noise_sd(out, flat) / noise0:.2f} / {edge_sharpness(out, edges) / edge0:.2f}")
        rows.append(f"| `{file}` ({'×'.join(map(str, image.shape[::-1]))}) | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def _time_rows(methods) -> list[str]:
    rows = []
    rng = np.random.default_rng(0)
    for shape in ((512, 512), (616, 820)):
        image = rng.normal(100.0, 10.0, shape).astype(np.float32)
        cells = []
        for denoiser in methods.values():
            denoiser.denoise(_plane(image), modality="us")  # warm-up: weights laid out, kernels chosen
            started = time.perf_counter()
            for _ in range(3):
                denoiser.denoise(_plane(image), modality="us")
            cells.append(f"{(time.perf_counter() - started) / 3:.2f}")
        rows.append(f"| {shape[1]}×{shape[0]} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def _table(header: list[str], rows: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a registry name")
    parser.add_argument("--twin", help="a planar model file to use as the twin (default: the registered one)")
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="the real volumes (../shared/data)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="markdown file whose `planar-MODEL` section is (re)written")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = _methods(args.model, args.twin)
    names = list(methods)
    reference = _reference_rows(methods, args.data)
    real = _real_rows(methods, args.data)
    timing = _time_rows(methods)
    diffusion = "Slicer's anisotropic diffusion"
    section = "\n".join([
        f"## 2D images: the planar twin of {args.model}",
        "",
        f"`{command_line()}` — {utc_now()}; {machine_line(torch.__version__, f'{args.threads} threads')}.",
        "",
        "With a reference: PSNR (dB) / SSIM against the noise-free acquisition, mean over three slices of each "
        "simulated acquisition, each denoised as a 2D image (best in bold).",
        "",
        *_table(["source", "noise", "input", *names, diffusion], reference),
        "Real images without a reference (middle frame or slice, held out): flat-region noise left / strong-edge "
        "sharpness kept, each relative to the input.",
        "",
        *_table(["image", *names, diffusion], real),
        "Seconds per image (the library's `denoise`, noise estimate included, mean of 3 after a warm-up):",
        "",
        *_table(["image", *names], timing),
    ])
    publish(section, args.out, f"planar-{args.model}")


if __name__ == "__main__":
    main()
