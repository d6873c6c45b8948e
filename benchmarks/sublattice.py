"""Correlation-aware denoising measured: the whole-image path against the sub-lattice path (``--grain auto``).

Three parts, every figure from one run:
- **reference**: simulated acquisitions with a noise-free twin (MR acquired in k-space, 1 and 4 coils, 3 % and 6 %;
  white Gaussian on the MNI152 template): PSNR on the foreground, *residual r* (correlation of what was removed
  with the clean image's detail, ``metrics.residual_structure_correlation``: 0 removes noise only) and the seam
  score of the output beside the input's; oracle-tuned anisotropic diffusion for scale.
- **ct-water**: FBP CT of a 240 mm water disc (``ct-projection`` noise, three doses, 8 slices each): noise SD of the
  output over the input's in the central 128², seam score beside the input's, and the peak frequency of the noise
  power spectrum there (``evaluation.noise_power``) beside the input's.
- **real**: the real scans in ``--data`` (middle frame of each B-mode sequence; 16 central slices of a volume):
  flat-region noise left / strong-edge sharpness kept (both relative to the input, as in ``real_noisy.py``), seam
  score, and the retention of small low-contrast lesions inserted into the real image
  (``evaluation.lesion_retention``: 1.5 × the local noise SD, 1.5 × 3 × 3 voxels in 3D, 4 pixels in 2D).
- **time**: seconds of the library's ``denoise`` for a 64 × 256 × 256 volume with grain, whole and on sub-lattices,
  and of ``medical-denoise denoise`` on it as a file, start to exit, with the command's peak resident memory.

Seam score (``evaluation.seams``): the worst ratio of the power at a period-2, 3 or 4 lattice frequency to the
power around it, on the centre 128² of in-plane slices (Hann-tapered, so an image's own edges do not count).

Usage: ``python benchmarks/sublattice.py [--data ../shared/data] [--parts reference ct-water real time] [--out docs/benchmarks.md]``
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import (command_line, default_data_dir, ensure_library_importable, library_env, machine_line, publish,
                     utc_now)
from realistic_acquisitions import SETTINGS, SOURCES, acquire, prepare
from realistic_lcd import make_phantom, realisations

ensure_library_importable()
from MedicalDenoiseLib.evaluation.baselines import best_anisotropic_diffusion  # noqa: E402
from MedicalDenoiseLib.evaluation.lesion_retention import measure_retention  # noqa: E402
from MedicalDenoiseLib.evaluation.noise_power import peak_frequency, radial_nps  # noqa: E402
from MedicalDenoiseLib.evaluation.metrics import psnr, residual_structure_correlation  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import (edge_sharpness, flat_region_mask, flat_region_noise_sd,  # noqa: E402
                                                         foreground_mask, strong_edge_mask)
from MedicalDenoiseLib.evaluation.seams import in_plane_images, seam_score  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry, Volume  # noqa: E402
from MedicalDenoiseLib.io.writing import write_volume  # noqa: E402
from MedicalDenoiseLib.models.model_files import load_model  # noqa: E402
from MedicalDenoiseLib.models.registry import open_model  # noqa: E402
from MedicalDenoiseLib.noise import noise_kind  # noqa: E402

PARTS = ("reference", "ct-water", "real", "time")
MR_SETTINGS = ("mni-kspace-1coil-0.03", "mni-kspace-1coil-0.06", "mni-kspace-4coil-0.03", "mni-kspace-4coil-0.06",
               "brain2-kspace-1coil-0.03", "brain2-kspace-1coil-0.06", "brain2-kspace-4coil-0.03",
               "brain2-kspace-4coil-0.06")
WHITE = (0.03, 0.05)
DOSES = (4e4, 1.25e4, 4e3)
REAL_FILES = ("us_curvilinear_bk_plus.mha", "us_curvilinear_ultrasonix_plus.mha", "us_prostate_trus_phantom_plus.mha",
              "mr_chest_tfl3d_seg3d.nii.gz", "mr_phantom_t1mprage_xa30i.nii.gz", "mr_head_t1fl2d_decubitus.nii.gz",
              "mr_phantom_t1tse_philips_csdl.nii.gz", "ct_abdomen_thin3sl_dcmqi.nii.gz", "ct_body_petct_20sl_totalseg.nii.gz")
CT_SETTINGS = ("ct-3mm-photons-1e5", "ct-3mm-photons-2.5e4", "ct-thin-photons-1e6", "ct-thin-photons-2.5e5",
               "ct-thin-photons-6e4")
# (label, model, grain, with the model's sub-lattice twin, refinement): the paths compared. Refinement: False (the
# network's output), WIENER (the Wiener pass alone) or True (the Wiener pass and the collaborative one, the default).
WIENER = "wiener"
PATHS = (("v3 whole", "autoencoder-v3", "1", True, True), ("v2 whole", "autoencoder-v2", "1", True, True),
         ("v2 grain auto, network only", "autoencoder-v2", "auto", False, False),
         ("v2 grain auto + Wiener", "autoencoder-v2", "auto", False, WIENER),
         ("v2 grain auto + Wiener + groups (default)", "autoencoder-v2", "auto", False, True))
TWIN_PATH = ("v2 grain auto, its sub-lattice twin on the sub-lattices", "autoencoder-v2", "auto", True, True)


def _paths(twin: Path | None) -> tuple[tuple[str, str, str, bool], ...]:
    """The paths compared: with a sub-lattice twin for v2 (registered, or ``--twin``) one more, through it."""
    registered = open_model("autoencoder-v2").sublattice is not None
    return PATHS + (TWIN_PATH,) if twin or registered else PATHS


def _denoisers(twin: Path | None) -> dict[str, Denoiser]:
    """One Denoiser per path label."""
    denoisers = {}
    for label, model, _, with_twin, refine in PATHS + (TWIN_PATH,):
        denoisers[label] = Denoiser(model, device="cpu", refine=bool(refine), group=refine is True)
        if twin is not None and with_twin:
            denoisers[label].model.sublattice = load_model(twin)
        elif not with_twin:
            denoisers[label].model.sublattice = None
    return denoisers


def _volume(array: np.ndarray, spacing, modality: str) -> Volume:
    spacing = tuple(float(s) for s in spacing)[-array.ndim:]
    return Volume(array.astype(np.float32), Geometry(spacing[::-1], (0.0,) * array.ndim, tuple(np.eye(array.ndim).ravel())),
                  modality=modality, source="benchmark")


def _seam(image: np.ndarray) -> float:
    return seam_score(in_plane_images(image)) if min(image.shape[-2:]) >= 32 else float("nan")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows), ""]


def reference_part(data: Path | None, denoisers: dict[str, Denoiser], paths=PATHS) -> list[str]:
    rows = []
    cases = [(key, None) for key in MR_SETTINGS + CT_SETTINGS] + [("mni-white", sigma) for sigma in WHITE]
    for key, white in cases:
        if white is None:
            setting = next(s for s in SETTINGS if s.key == key)
            prepared = prepare(next(s for s in SOURCES if s.key == setting.source), data)
            realised = acquire(setting, prepared, 7)
            noisy, clean, label = realised.noisy, realised.clean, setting.label
        else:
            prepared = prepare(next(s for s in SOURCES if s.key == "mni"), data)
            clean = prepared.clean
            noisy = noise_kind("gaussian").fixed(sigma=white * prepared.data_range)(clean, np.random.default_rng(7))
            label = f"white Gaussian σ {white:.0%}"
        print(f"reference: {key} {label}", file=sys.stderr, flush=True)
        fg, rng = prepared.foreground, prepared.data_range
        cells = [f"{prepared.source.key}: {label}", f"{psnr(clean, noisy, rng, fg):.1f} / {_seam(noisy):.2f}"]
        for label, _, grain, _, _ in paths:
            result = denoisers[label].denoise(_volume(noisy, prepared.spacing, prepared.source.modality), grain=grain)
            out = result.volume.array
            cells.append(f"{psnr(clean, out, rng, fg):.1f} / {residual_structure_correlation(clean, noisy, out):+.2f} / "
                         f"{_seam(out):.2f}" + (f" ({'×'.join(map(str, result.grain.strides[1:]))})" if grain == "auto" else ""))
        diffused, _ = best_anisotropic_diffusion(noisy, clean, rng, prepared.spacing)
        cells.append(f"{psnr(clean, diffused, rng, fg):.1f} / {residual_structure_correlation(clean, noisy, diffused):+.2f}")
        rows.append(cells)
    return ["### With a reference: PSNR dB / residual r / seam score (input: PSNR / seam)", "",
            *_table(["setting", "input", *[p[0] for p in paths], "anisotropic diffusion (oracle-tuned)"], rows)]


def ct_water_part(denoisers: dict[str, Denoiser], paths=PATHS) -> list[str]:
    v2_paths = [p for p in paths if p[1] == "autoencoder-v2"]
    phantom = make_phantom(256, 1.0, 240.0)
    centre = (slice(None), slice(64, 192), slice(64, 192))
    rows = []
    for index, photons in enumerate(DOSES):
        print(f"ct-water: {photons:g} photons", file=sys.stderr, flush=True)
        slices = realisations(phantom.absent, 8, photons, 1.0, 11 + index)
        sd_in = float((slices - phantom.absent)[centre].std())
        peak_in = _nps_peak(slices - phantom.absent, centre)
        cells = [f"{photons:.2g}", f"{sd_in:.1f} HU / {seam_score(slices):.2f} / {peak_in:.3f}"]
        for label, _, grain, _, _ in v2_paths:
            out = np.stack([denoisers[label].denoise(_volume(s, (1.0, 1.0), "ct"), grain=grain).volume.array for s in slices])
            peak = _nps_peak(out - phantom.absent, centre)
            cells.append(f"×{(out - phantom.absent)[centre].std() / sd_in:.2f} / {seam_score(out):.2f} / "
                         f"{peak:.3f} ({peak / peak_in - 1:+.0%})")
        rows.append(cells)
    return ["### FBP CT water: noise SD relative to the input / seam score / NPS peak (cycles/mm, change)", "",
            *_table(["photons per bin and view", "input SD / seam / NPS peak", *[p[0] for p in v2_paths]], rows),
            "", "NPS peak: the frequency of the radially averaged noise power spectrum's maximum over the 8 central "
            "128² squares (`evaluation.noise_power`); a denoiser that moves it down makes the grain coarser "
            "(the \"plastic\" look)."]


def _nps_peak(noise: np.ndarray, centre) -> float:
    """Peak frequency of the radial NPS of the noise's central squares (1 mm pixels)."""
    return peak_frequency(*radial_nps(noise[centre], 1.0))


def _real_image(path: Path) -> tuple[np.ndarray, tuple[float, ...], str]:
    volume = read_volume(path)
    array = volume.array.astype(np.float32)
    spacing = tuple(volume.geometry.spacing[::-1])
    if path.name.startswith("us_") and array.ndim == 3 and "recon3d" not in path.name:
        return array[len(array) // 2], spacing[1:], "us"  # a frame sequence: one 2D frame
    if array.ndim == 3 and array.shape[0] > 16:
        array = array[array.shape[0] // 2 - 8: array.shape[0] // 2 + 8]
    return array, spacing, path.name.split("_", 1)[0]


def real_part(data: Path, denoisers: dict[str, Denoiser], paths=PATHS) -> list[str]:
    rows = []
    for name in REAL_FILES:
        if not (data / name).is_file():
            continue
        print(f"real: {name}", file=sys.stderr, flush=True)
        array, spacing, modality = _real_image(data / name)
        low, high = np.percentile(array, [1, 99.5])
        foreground = foreground_mask((array - low) / max(high - low, 1e-6))
        flat, edges = flat_region_mask(array, foreground), strong_edge_mask(array, foreground)
        noise_in, edge_in = flat_region_noise_sd(array, flat), edge_sharpness(array, edges)
        cells = [f"`{name}` {'×'.join(map(str, array.shape[::-1]))}", f"{_seam(array):.2f}"]
        for label, model, grain, _, _ in paths:
            if modality != "mr" and model == "autoencoder-v3":
                cells.append("–")
                continue
            run = lambda image: denoisers[label].denoise(_volume(image, spacing, modality), grain=grain)  # noqa: E731
            result = run(array)
            out = result.volume.array
            kept = measure_retention(lambda image: run(image).volume.array, array, np.random.default_rng(0))
            cells.append(f"{flat_region_noise_sd(out, flat) / noise_in:.2f} / {edge_sharpness(out, edges) / edge_in:.2f} / "
                         f"{_seam(out):.2f} / {kept:.0%}" + (f" ({'×'.join(map(str, result.grain.strides[1:]))})" if grain == "auto" else ""))
        rows.append(cells)
    return ["### Real scans: noise left / edges kept / seam score / lesion amplitude kept", "",
            *_table(["image", "input seam", *[p[0] for p in paths]], rows)]


LARGE_CT = "ct_chest_4dct_phase00_itkelastix.nii.gz"  # 512 × 512 × 141, int16: a whole chest CT as scanners write it


def time_part(denoisers: dict[str, Denoiser], paths=PATHS, data: Path | None = None) -> list[str]:
    clean = np.full((64, 256, 256), 0.5, np.float32)
    noisy = noise_kind("mr-kspace").fixed(sigma=0.04, acquired=(1.0, 0.6, 0.6)).simulate(clean, np.random.default_rng(0)).noisy
    volume = _volume(noisy, (1.0, 1.0, 1.0), "mr")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "input.nrrd"
        write_volume(volume, source)
        for label, model, grain, _, refine in paths:
            if label.startswith("v3"):
                continue
            denoisers[label].denoise(volume, grain=grain)  # warm-up
            started = time.perf_counter()
            result = denoisers[label].denoise(volume, grain=grain)
            library = time.perf_counter() - started
            if label == TWIN_PATH[0] or refine == WIENER:  # the command has no such option
                rows.append([label, f"{library:.2f}", "–", "–", result.describe()])
                continue
            seconds, peak = _cli_run(source, Path(folder) / "output.nrrd", model, grain, refine)
            rows.append([label, f"{library:.2f}", f"{seconds:.2f}", f"{peak:.0f}", result.describe()])
    return ["### Time and memory: 64 × 256 × 256 MR with grain", "",
            *_table(["path", "library `denoise` s (noise estimate included)", "`medical-denoise denoise` s (start to exit)",
                     "its peak RSS MiB", "what was done"], rows),
            "", "The command runs in a fresh process per path (`--device cpu`, NRRD in and out); its peak resident "
            "memory is the child's own high-water mark, `VmHWM` (Python, torch, the model, input, output; `ru_maxrss` would "
            "include the benchmark's own size, which Linux carries over at exec).", "",
            *_large_ct_part(data, paths)]


def _large_ct_part(data: Path | None, paths) -> list[str]:
    """The command on a whole real chest CT: what a large volume costs in time and memory per path."""
    if data is None or not (data / LARGE_CT).is_file():
        return []
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, model, grain, _, refine in paths:
            if label.startswith("v3") or label == TWIN_PATH[0] or refine == WIENER:
                continue
            print(f"time: {LARGE_CT}, {label}", file=sys.stderr, flush=True)
            seconds, peak = _cli_run(data / LARGE_CT, Path(folder) / "output.nii.gz", model, grain, refine)
            rows.append([label, f"{seconds:.1f}", f"{peak:.0f}"])
    return [f"### Time and memory: a whole chest CT, 512 × 512 × 141 (`{LARGE_CT}`, int16, 141 MiB as float32)", "",
            *_table(["path", "`medical-denoise denoise` s (start to exit)", "its peak RSS MiB"], rows),
            "The collaborative pass runs in slabs of 64 planes of 512 × 512 (plus 16 on each side), so its memory "
            "follows the slab, not the volume."]


# Runs the command in this interpreter and, at exit, writes the process's own peak resident memory (VmHWM: the
# high-water mark of the memory map made at exec). ``ru_maxrss`` would not do: at exec Linux carries over the
# parent's high-water mark, so a small command started from a large benchmark reports the benchmark's size.
_PEAK_REPORTING = ("import atexit, re, runpy, sys\n"
                   "peak_file = sys.argv[1]\n"
                   "def report():\n"
                   "    status = open('/proc/self/status').read()\n"
                   "    open(peak_file, 'w').write(re.search(r'VmHWM:\\s*(\\d+)', status).group(1))\n"
                   "atexit.register(report)\n"
                   "sys.argv = ['medical-denoise'] + sys.argv[2:]\n"
                   "runpy.run_module('MedicalDenoiseLib.cli.main', run_name='__main__')\n")


def _cli_run(source: Path, target: Path, model: str, grain: str, refine: bool) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of ``medical-denoise denoise`` in a fresh process."""
    arguments = ["denoise", str(source), str(target), "--model", model, "--grain", grain, "--device", "cpu",
                 "--progress", "none", "--overwrite"] + ([] if refine else ["--no-refine"])
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryFile() as errors:
        # stderr to a file, not a pipe: a chatty child cannot fill it and block
        peak_file = Path(folder) / "peak"
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _PEAK_REPORTING, str(peak_file), *arguments],
                               stdout=subprocess.DEVNULL, stderr=errors, env=library_env())
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"medical-denoise failed ({child.returncode}): "
                               f"{errors.read().decode(errors='replace').strip()[-300:]}")
        return seconds, int(peak_file.read_text()) / 1024  # kB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="markdown file whose `sublattice` section is (re)written")
    parser.add_argument("--twin", type=Path, help="a candidate sub-lattice twin of autoencoder-v2 (a model file trained "
                        "with data.sublattice) to compare beside v2 on the sub-lattices")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    denoisers, paths = _denoisers(args.twin), _paths(args.twin)
    body = []
    if "reference" in args.parts:
        body += reference_part(args.data, denoisers, paths)
    if "ct-water" in args.parts:
        body += ct_water_part(denoisers, paths)
    if "real" in args.parts and args.data:
        body += real_part(args.data, denoisers, paths)
    if "time" in args.parts:
        body += time_part(denoisers, paths, args.data)
    section = "\n".join([
        "## Correlation-aware denoising: whole image against sub-lattices", "",
        f"`{command_line()}` — {utc_now()}; {machine_line(torch.__version__, f'{args.threads} threads')}; "
        f"{(time.perf_counter() - started) / 60:.1f} min.", "",
        "v2 grain auto: `autoencoder-v2` on the sub-lattices the measured grain asks for (strides in brackets, y×x), "
        "made to agree (`inference/sublattice.py`); *network only* stops there (`--no-refine`), *+ Wiener* then "
        "Wiener-filters the input with that output as the signal and the scan's own noise spectrum "
        "(`inference/wiener_refinement.py`), *+ groups* then filters the input again in groups of similar cubes "
        "(`inference/collaborative_filter.py`), as `denoise` does by default; whole: the model on the whole image, "
        "refined; with a sub-lattice twin, the same split with the twin on the sub-lattices. See the script's "
        "docstring for each measure.", "",
        *body,
    ])
    publish(section, args.out, "sublattice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
