"""Adapting to the scan measured: the shipped model against the same model fitted to each scan alone.

Parts, every figure from one run:
- **reference**: simulated acquisitions with a noise-free twin (``realistic_acquisitions``: MR acquired in
  k-space, 1 and 4 coils, 3 % and 6 %; projection-domain CT; B-mode speckle), each adapted on its noisy volume
  only: PSNR on the foreground, residual r (what was removed against the clean detail), and on BM4D's centre crop
  PSNR beside BM4D told the noise PSD (run here when ``bm4d`` is installed) and oracle-tuned diffusion.
- **real**: the real MR and CT scans in ``--data`` (the central 24 slices, or all when fewer; the B-mode sequences
  have too few frames to adapt on): flat-region noise left /
  strong edges kept (relative to the input), seam score, and the amplitude kept of small low-contrast lesions
  inserted into the real image (the adapted model is fitted once, to the scan without lesions).
- **lcd**: the CT low-contrast phantom of ``realistic_lcd`` (FBP, three doses): its signal-present and
  signal-absent realisations stacked into one volume of 3 mm slices (the rods run through it, as in the MITA
  phantom), denoised whole by the shipped model and by the model fitted to that volume: CHO AUC of each insert
  and the noise SD in the water, beside the input's.
- **budget**: ``medical-denoise denoise --adapt`` end to end through the command line on a 256 × 256 × 150 MR
  acquired in k-space: wall time against its 3-minute budget.

Usage: ``python benchmarks/adapt.py [--data ../shared/data] [--parts reference real lcd budget] [--minutes 1]
[--out docs/benchmarks.md]``
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import command_line, default_data_dir, ensure_library_importable, machine_line, publish, utc_now
from realistic_lcd import DOSES, INSERTS, detectability, make_phantom, realisations
from realistic_acquisitions import SETTINGS, SOURCES, acquire, bm4d_region, estimate_psd, prepare
from realistic_methods import bm4d_available, bm4d_with_psd
from sublattice import _seam, _table, _volume

ensure_library_importable()
from MedicalDenoiseLib.adaptation.fine_tune import adapt_to_scan  # noqa: E402
from MedicalDenoiseLib.errors import InputError  # noqa: E402
from MedicalDenoiseLib.evaluation.baselines import best_anisotropic_diffusion  # noqa: E402
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.lesion_retention import measure_retention  # noqa: E402
from MedicalDenoiseLib.evaluation.metrics import psnr, residual_structure_correlation  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import (edge_sharpness, flat_region_mask, flat_region_noise_sd,  # noqa: E402
                                                         foreground_mask, strong_edge_mask)
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry, Volume  # noqa: E402
from MedicalDenoiseLib.io.writing import write_volume  # noqa: E402
from MedicalDenoiseLib.noise import noise_kind  # noqa: E402

PARTS = ("reference", "budget", "real", "lcd")
LCD_REALISATIONS = 50  # of each class per dose
LCD_SLICE_MM = 3.0
LCD_RESAMPLES = 500
REFERENCE = ("mni-kspace-1coil-0.03", "mni-kspace-1coil-0.06", "mni-kspace-4coil-0.03", "mni-kspace-4coil-0.06",
             "brain2-kspace-1coil-0.03", "brain2-kspace-4coil-0.06", "ct-3mm-photons-2.5e4")
REAL_FILES = ("mr_chest_tfl3d_seg3d.nii.gz", "mr_phantom_t1mprage_xa30i.nii.gz", "mr_head_t1fl2d_decubitus.nii.gz",
              "ct_body_petct_20sl_totalseg.nii.gz")
MODEL = "autoencoder-v2"
SEED = 7


def _adapted(volume: Volume, minutes: float) -> tuple[Denoiser | None, str]:
    try:
        adaptation = adapt_to_scan(volume, MODEL, seconds=minutes * 60, device="cpu")
    except InputError as refused:
        return None, str(refused).split(": ", 1)[-1]
    if not adaptation.kept:
        return None, adaptation.describe()
    return Denoiser(adaptation.model, device="cpu"), adaptation.describe()


def reference_part(data: Path | None, minutes: float) -> list[str]:
    shipped = Denoiser(MODEL, device="cpu")
    rows, notes = [], []
    for key in REFERENCE:
        setting = next(s for s in SETTINGS if s.key == key)
        prepared = prepare(next(s for s in SOURCES if s.key == setting.source), data)
        realised = acquire(setting, prepared, SEED)
        noisy, clean, fg, rng = realised.noisy, realised.clean, prepared.foreground, prepared.data_range
        if noisy.ndim != 3:
            continue
        print(f"reference: {key}", file=sys.stderr, flush=True)
        volume = _volume(noisy, prepared.spacing, prepared.source.modality)
        region = bm4d_region(prepared)
        crop = lambda a: centre_crop(a, region)  # noqa: E731
        unadapted = shipped.denoise(volume).volume.array
        started = time.perf_counter()
        denoiser, what = _adapted(volume, minutes)
        adapted = unadapted if denoiser is None else denoiser.denoise(volume).volume.array
        seconds = time.perf_counter() - started
        notes.append(f"- {setting.label} ({key}): {what}; {seconds:.0f} s with the final pass")
        cells = [f"{prepared.source.key}: {setting.label}", f"{psnr(clean, noisy, rng, fg):.1f}"]
        for out in (unadapted, adapted):
            cells.append(f"{psnr(clean, out, rng, fg):.2f} / {residual_structure_correlation(clean, noisy, out):+.3f} / "
                         f"{psnr(crop(clean), crop(out), rng):.2f}")
        if bm4d_available():
            psd = estimate_psd(setting, prepared, region, 4, SEED)
            bm4d = bm4d_with_psd(crop(noisy), psd)
            cells.append(f"{psnr(crop(clean), bm4d, rng):.2f} / {residual_structure_correlation(crop(clean), crop(noisy), bm4d):+.3f}")
        else:
            cells.append("– (bm4d not installed)")
        diffused, _ = best_anisotropic_diffusion(noisy, clean, rng, prepared.spacing)
        cells.append(f"{psnr(clean, diffused, rng, fg):.2f} / {residual_structure_correlation(clean, noisy, diffused):+.3f}")
        rows.append(cells)
    header = ["setting", "input PSNR", f"{MODEL} (PSNR / r / PSNR on BM4D's crop)", f"adapted, {minutes:g} min (same)",
              "BM4D told the PSD (BM4D's crop: PSNR / r)", "anisotropic diffusion, oracle-tuned (PSNR / r)"]
    return ["### With a reference (adapted on the noisy volume alone)", "", *_table(header, rows), *notes, ""]


def _real_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...], str]:
    volume = read_volume(path)
    array = volume.array.astype(np.float32)
    if array.ndim == 3 and array.shape[0] > 24:
        array = array[array.shape[0] // 2 - 12: array.shape[0] // 2 + 12]
    modality = "us" if path.name.startswith("us_") else path.name.split("_", 1)[0]
    return array, tuple(volume.geometry.spacing[::-1]), modality


def real_part(data: Path, minutes: float) -> list[str]:
    shipped = Denoiser(MODEL, device="cpu")
    rows, notes = [], []
    for name in REAL_FILES:
        if not (data / name).is_file():
            continue
        print(f"real: {name}", file=sys.stderr, flush=True)
        array, spacing, modality = _real_volume(data / name)
        low, high = np.percentile(array, [1, 99.5])
        foreground = foreground_mask((array - low) / max(high - low, 1e-6))
        flat, edges = flat_region_mask(array, foreground), strong_edge_mask(array, foreground)
        noise_in, edge_in = flat_region_noise_sd(array, flat), edge_sharpness(array, edges)
        denoiser, what = _adapted(_volume(array, spacing, modality), minutes)
        notes.append(f"- `{name}`: {what}")
        cells = [f"`{name}` {'×'.join(map(str, array.shape[::-1]))}", f"{_seam(array):.2f}"]
        for chosen in (shipped, denoiser):
            if chosen is None:
                cells.append("shipped model kept")
                continue
            run = lambda image, d=chosen: d.denoise(_volume(image, spacing, modality)).volume.array  # noqa: E731
            out = run(array)
            try:
                kept = f"{measure_retention(run, array, np.random.default_rng(0)):.0%}"
            except ValueError as reason:  # no flat place far enough from the border for a lesion
                kept = f"– ({reason})"
            cells.append(f"{flat_region_noise_sd(out, flat) / noise_in:.2f} / {edge_sharpness(out, edges) / edge_in:.2f} / "
                         f"{_seam(out):.2f} / {kept}")
        rows.append(cells)
    return ["### Real scans: noise left / edges kept / seam score / lesion amplitude kept", "",
            *_table(["image", "input seam", MODEL, f"adapted, {minutes:g} min"], rows), *notes, ""]


def lcd_part(minutes: float) -> list[str]:
    """CHO AUC on the FBP phantom, stacked into a volume: input, shipped model, model fitted to that volume."""
    phantom = make_phantom(128, 1.0, 120.0)
    shipped = Denoiser(MODEL, device="cpu")
    centre = (slice(None), slice(54, 74), slice(54, 74))
    inserts = [f"{d:g} mm, {c:g} HU" for d, c in INSERTS]
    rows, notes = [], []
    for index, photons in enumerate(DOSES):
        print(f"lcd: {photons:g} photons", file=sys.stderr, flush=True)
        present = realisations(phantom.present, LCD_REALISATIONS, photons, phantom.pixel_mm, 31 + 2 * index)
        absent = realisations(phantom.absent, LCD_REALISATIONS, photons, phantom.pixel_mm, 32 + 2 * index)
        stack = np.concatenate([present, absent])
        volume = _volume(stack, (LCD_SLICE_MM, phantom.pixel_mm, phantom.pixel_mm), "ct")
        denoiser, what = _adapted(volume, minutes)
        notes.append(f"- {photons:g} photons: {what}")
        outputs = {"input": stack, MODEL: shipped.denoise(volume).volume.array,
                   f"adapted, {minutes:g} min": None if denoiser is None else denoiser.denoise(volume).volume.array}
        sd_in = float(absent[centre].std())
        for name, out in outputs.items():
            if out is None:
                rows.append(["", "", name, "shipped model kept", *["–"] * len(inserts)])
                continue
            observed = detectability(out[:LCD_REALISATIONS], out[LCD_REALISATIONS:], phantom,
                                     np.random.default_rng(SEED), LCD_RESAMPLES)
            first = name == "input"
            rows.append([f"{photons:g}" if first else "", f"{sd_in:.1f}" if first else "", name,
                         "–" if first else f"×{float(out[LCD_REALISATIONS:][centre].std()) / sd_in:.2f}",
                         *[f"{r.auc:.3f} [{r.low:.2f}, {r.high:.2f}]" for r in observed]])
    return ["### CT low-contrast phantom, stacked into a volume: CHO AUC [95 % interval]", "",
            f"{LCD_REALISATIONS} signal-present and {LCD_REALISATIONS} signal-absent FBP realisations per dose "
            f"(`realistic_lcd`), one volume of {LCD_SLICE_MM:g} mm slices; observer as in *Realistic noise: CT "
            f"low-contrast detectability*, {LCD_RESAMPLES} splits.", "",
            *_table(["photons", "input SD (HU)", "method", "SD after", *inserts], rows), *notes, ""]


def budget_part() -> list[str]:
    """``denoise --adapt`` through the command line on a 256 × 256 × 150 MR acquired in k-space."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (150, 256, 256)], indexing="ij", sparse=True)
    clean = (0.2 + 0.6 * (x**2 + y**2 + 0.5 * z**2 < 0.7) + 0.2 * np.sin(6 * x) * np.cos(5 * y)).astype(np.float32)
    noisy = noise_kind("mr-kspace").fixed(sigma=0.04, acquired=(0.8, 0.65, 0.65), acquisition="3d", coils=1).simulate(
        clean, np.random.default_rng(0)).noisy
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "mr.nii.gz"
        write_volume(Volume(noisy, Geometry((1.0, 1.0, 1.0), (0.0,) * 3, tuple(np.eye(3).ravel())), modality="mr"), source)
        command = [str(Path(sys.executable).with_name("medical-denoise")), "denoise", str(source),
                   str(Path(folder) / "out.nii.gz"), "--adapt", "3", "--device", "cpu"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - started
    line = done.stdout.strip().splitlines()[-1].split(": ", 1)[-1]
    return ["### Budget: `medical-denoise denoise MR.nii.gz OUT.nii.gz --adapt 3` on 256 × 256 × 150 voxels", "",
            f"{seconds:.0f} s wall time end to end (read, adapt, denoise, write) against the 3-minute budget. "
            f"It printed: {line}", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--minutes", type=float, default=1.0, help="adaptation budget per scan (default 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="markdown file whose `adapt` section is (re)written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    body = []
    if "reference" in args.parts:
        body += reference_part(args.data, args.minutes)
    if "budget" in args.parts:
        body += budget_part()
    if "real" in args.parts and args.data:
        body += real_part(args.data, args.minutes)
    if "lcd" in args.parts:
        body += lcd_part(args.minutes)
    section = "\n".join([
        "## Adapting to the scan", "",
        f"`{command_line()}` ({(time.perf_counter() - started) / 60:.1f} min, {utc_now()}; {machine_line(torch.__version__)}).",
        "",
        f"{MODEL} with `--grain auto`, shipped and fitted to each scan alone (Recorrupted-to-Recorrupted with noise "
        "drawn like the scan's, `MedicalDenoiseLib/adaptation/`). The crops here are far smaller than a clinical "
        "series, so a minute on them is more training per voxel than three minutes on 256 × 256 × 150.", "",
        *body,
    ])
    publish(section, args.out, "adapt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
