"""Real noisy volumes without a clean reference: noise left in flat regions and edge sharpness kept.

Every real volume in ``--data`` (CT, MR, ultrasound acquisitions with their own noise), centre-cropped to at
most 64×192×192 voxels (z×y×x) to bound the time, is denoised by each shipped model (blind) and by two
classical filters that need no clean image: curvature anisotropic diffusion at fixed settings (conductance
1.0, 5 iterations: the middle of the quality benchmark's grid) and a Gaussian of 1 voxel, as a plain blur for
scale. On the *input* two voxel sets are chosen, and every output is measured on those same voxels:

- **flat**: the 25 % of the foreground with the lowest in-plane gradient after an in-plane Gaussian of
  1.5 voxels (``reference_free.flat_region_mask``). *Noise SD* is the median, over flat voxels, of the local SD in a
  5 × 5 in-plane window (``reference_free.flat_region_noise_sd``); *noise left* is output / input.
- **edges**: the 2 % of the foreground with the highest smoothed in-plane gradient
  (``reference_free.strong_edge_mask``). *Edge sharpness* is the mean in-plane gradient magnitude there after a
  1-voxel in-plane Gaussian (``reference_free.edge_sharpness``); *edges kept* is output / input (1: as sharp as the
  input; below 1: blurred).

The foreground is the input, smoothed by 1 voxel, above 0.1 of the normalised range (CT: −800 HU).
A good denoiser lowers *noise left* well below 1 while keeping *edges kept* near 1; a blur lowers both.
Volumes no shipped model was trained on are marked held out; the others were seen in training, so their
numbers flatter the models.

Usage:
    python benchmarks/real_noisy.py --out docs/benchmarks.md
    python benchmarks/real_noisy.py --files brain2 --max-shape 16 64 64 --model tiny.safetensors
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from _common import (HELD_OUT_FILES, command_line, default_data_dir, ensure_library_importable, machine_line,
                     utc_now, publish)

ensure_library_importable()
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.baselines import curvature_anisotropic_diffusion, gaussian_smoothing  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.errors import MedicalDenoiseError  # noqa: E402
from MedicalDenoiseLib.io.formats import is_image_file  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import (edge_sharpness, flat_region_mask,  # noqa: E402
                                                         flat_region_noise_sd, foreground_mask, strong_edge_mask)
from MedicalDenoiseLib.inference.normalization import MODALITIES, IntensityNormalizer, guess_modality  # noqa: E402
from MedicalDenoiseLib.models.registry import list_models  # noqa: E402
from MedicalDenoiseLib.io.volume import Volume  # noqa: E402

MAX_SHAPE = (64, 192, 192)  # (z, y, x)
DIFFUSION = (1.0, 5)  # conductance, iterations
FLAT_FRACTION = 0.25
EDGE_FRACTION = 0.02
FOREGROUND_THRESHOLD = 0.1
RUNTIME_EPILOG = ("Runtime on 2 CPU cores: about 2 minutes for the 9 volumes of ../shared/data with one model "
                  "(most of it reading the files and anisotropic diffusion).")


@dataclass
class RealVolume:
    """A cropped real volume and the voxel sets chosen on it."""

    name: str  # file name
    held_out: bool
    array: np.ndarray  # float32 (z, y, x), the input's units
    spacing_zyx: tuple[float, ...]
    modality: str
    normalizer: IntensityNormalizer
    flat: np.ndarray
    edges: np.ndarray
    volume: Volume  # the crop, for the models (geometry plays no part in denoising)


class Row(NamedTuple):
    method: str
    noise_sd: float  # in the volume's units
    sharpness: float  # units per voxel
    seconds: float | None
    note: str


def modality_of(path: Path, array: np.ndarray, tagged: str | None) -> str:
    """From the project's file naming (``ct_``, ``mr_``, ``us_``), else from the file's tag or intensities."""
    prefix = path.name.split("_", 1)[0].lower()
    return prefix if prefix in MODALITIES else guess_modality(array, tagged)


def load(path: Path, max_shape: tuple[int, int, int]) -> RealVolume:
    """Reads and crops one volume and chooses its flat and edge voxels on the (noisy) input."""
    volume = read_volume(path)
    if volume.array.ndim != 3:
        raise ValueError(f"{path.name}: expected a 3D volume, got shape {volume.array.shape}")
    array = centre_crop(volume.array.astype(np.float32), max_shape)
    modality = modality_of(path, array, volume.modality)
    normalizer = IntensityNormalizer.fit(array, modality)
    foreground = foreground_mask(normalizer.normalize(array), FOREGROUND_THRESHOLD, dilation=0, smoothing_sigma=1.0)
    if foreground.sum() < 100:
        foreground = np.ones(array.shape, dtype=bool)  # nothing bright enough: measure everywhere
    return RealVolume(path.name, path.name in HELD_OUT_FILES, array, tuple(volume.geometry.spacing[::-1]), modality,
                      normalizer, flat_region_mask(array, foreground, FLAT_FRACTION),
                      strong_edge_mask(array, foreground, EDGE_FRACTION),
                      Volume(array, volume.geometry, modality, source=path.name))


def measure(real: RealVolume, method: str, output: np.ndarray, seconds: float | None, note: str = "") -> Row:
    return Row(method, flat_region_noise_sd(output, real.flat), edge_sharpness(output, real.edges), seconds, note)


def classical_methods(real: RealVolume) -> dict[str, Callable[[], np.ndarray]]:
    """Filters that need no clean image, run in normalised units and mapped back, with spacing-aware kernels."""
    scale, offset = real.normalizer.scale, real.normalizer.offset

    def diffusion() -> np.ndarray:
        filtered = curvature_anisotropic_diffusion(real.normalizer.normalize(real.array), *DIFFUSION,
                                                   spacing=real.spacing_zyx)
        return filtered.astype(np.float64) * scale + offset

    return {f"anisotropic diffusion (conductance {DIFFUSION[0]:g}, {DIFFUSION[1]} iterations)": diffusion,
            "Gaussian 1 px (plain blur, for scale)": lambda: gaussian_smoothing(real.array, 1.0, real.spacing_zyx)}


def run_volume(real: RealVolume, denoisers: list[Denoiser], skip: set[str]) -> list[Row]:
    """The input's row, then one per model and per classical filter."""
    rows = [measure(real, "input", real.array, None)]
    for denoiser in denoisers:
        print(f"  {real.name}: {denoiser.name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = denoiser.denoise(real.volume, modality=real.modality)
        seconds = time.perf_counter() - started
        rows.append(measure(real, f"{denoiser.name} (blind)", result.volume.array, seconds,
                            f"estimated σ {result.estimated_sigma / real.normalizer.scale:.2%} of range"))
    for name, run in classical_methods(real).items():
        if any(pattern in name.lower() for pattern in skip):
            continue
        print(f"  {real.name}: {name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        output = run()
        rows.append(measure(real, name, output, time.perf_counter() - started))
    return rows


def _noise_text(real: RealVolume, sd: float) -> str:
    relative = f"{sd / real.normalizer.scale:.2%}".replace("%", " %")
    return f"{relative} ({sd:.1f} HU)" if real.modality == "ct" else f"{relative} ({sd:.3g})"


def table_rows(real: RealVolume, rows: list[Row]) -> list[str]:
    """Markdown rows of one volume; the first cell names it once."""
    source = rows[0]
    label = (f"`{real.name}` ({real.modality.upper()}, {'×'.join(str(n) for n in real.array.shape[::-1])}, "
             f"{'**held out**' if real.held_out else 'seen in training'})")
    lines = []
    for index, row in enumerate(rows):
        noise_left = "–" if index == 0 else f"{row.noise_sd / source.noise_sd:.2f}"
        edges_kept = "–" if index == 0 else f"{row.sharpness / source.sharpness:.2f}"
        seconds = "–" if row.seconds is None else f"{row.seconds:.1f}"
        lines.append(f"| {label if index == 0 else ''} | {row.method} | {_noise_text(real, row.noise_sd)} | "
                     f"{noise_left} | {edges_kept} | {seconds} | {row.note} |")
    return lines


def report(tables: list[str], skipped: list[str], args: argparse.Namespace, denoisers: list[Denoiser]) -> str:
    models = ", ".join(f"`{d.name}`" for d in denoisers) or "(skipped)"
    lines = [
        "## Real noisy volumes (no reference)",
        "",
        f"- Data: every volume in `{args.data.name if args.data else '–'}` (the project's real acquisitions, "
        f"see its MANIFEST.md), centre crop of at most {'×'.join(str(n) for n in args.max_shape[::-1])} voxels "
        "(x×y×z); held out = no shipped model was trained on it",
        f"- Models: {models}, each blind; device "
        f"{', '.join(sorted({str(d.device) for d in denoisers})) or '–'}{', test-time flips' if args.flips else ''}",
        f"- Machine: {machine_line(torch.__version__, f'{torch.get_num_threads()} torch threads')}",
        f"- Date: {utc_now()}",
        f"- Command: `{command_line()}`",
        "",
        f"*Noise SD*: median local SD (5 × 5 in-plane window) over the flattest {FLAT_FRACTION:.0%} of the "
        "foreground, chosen on the input (lowest in-plane gradient after a 1.5-voxel in-plane Gaussian), as a "
        "fraction of the normalised range and in the volume's units. *Noise left*: output / input on those voxels. "
        f"*Edges kept*: mean in-plane gradient magnitude (after a 1-voxel in-plane Gaussian) on the input's "
        f"strongest {EDGE_FRACTION:.0%} foreground edges, output / input: 1 keeps the edges, below 1 blurs them. "
        "Smooth anatomy inside the window counts as noise, so a flat region's SD is an upper bound on the noise.",
        "",
        "| volume | method | noise SD (flat) | noise left | edges kept | seconds | notes |",
        "|---|---|---|---|---|---|---|",
        *tables,
    ]
    if skipped:
        lines += ["", "Not measured:", "", *[f"- {note}" for note in skipped]]
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Noise SD in flat regions and edge sharpness of real noisy volumes before and after each "
        "shipped model (blind) and two classical filters; no clean reference needed.", epilog=RUNTIME_EPILOG)
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="folder of real volumes (default: ../shared/data beside the checkout, if it exists)")
    parser.add_argument("--files", nargs="+", default=None, metavar="PART",
                        help="only files whose name contains one of these (default: every image in --data)")
    parser.add_argument("--max-shape", nargs=3, type=int, default=list(MAX_SHAPE), metavar=("Z", "Y", "X"),
                        help=f"largest centred crop, z y x (default {' '.join(map(str, MAX_SHAPE))})")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="registry names or .safetensors files (default: every model in the registry)")
    parser.add_argument("--model", help="one model; same as --models NAME")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                        help="leave out: 'model' (all models), 'diffusion', 'gaussian'")
    parser.add_argument("--device", default="auto", help="where the models run (auto, cpu, cuda, mps; default auto)")
    parser.add_argument("--tile", type=int, default=None, help="largest tile edge (default: the library's)")
    parser.add_argument("--flips", action="store_true", help="test-time flips for the models (8x slower)")
    parser.add_argument("--out", type=Path, help="markdown file whose real-noisy section is (re)written")
    args = parser.parse_args(argv)
    if args.data is None or not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder; give the folder of real volumes (e.g. ../shared/data)")
    if min(args.max_shape) < 8:
        parser.error(f"--max-shape must be at least 8 voxels per axis, got {args.max_shape}")
    if args.model and args.models:
        parser.error("give either --model NAME or --models NAME ..., not both")
    args.max_shape = tuple(args.max_shape)
    args.skip = {pattern.lower() for pattern in args.skip}
    names = [args.model] if args.model else (args.models or [entry.name for entry in list_models()])
    args.models = [] if "model" in args.skip else names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    paths = sorted(p for p in args.data.iterdir() if p.is_file() and is_image_file(p))
    if args.files:
        paths = [p for p in paths if any(part.lower() in p.name.lower() for part in args.files)]
    if not paths:
        raise SystemExit(f"--data {args.data}: no image files" + (f" matching {args.files}" if args.files else ""))
    denoisers = [Denoiser(name, device=args.device, tile_size=args.tile, flips=args.flips) for name in args.models]
    tables, skipped = [], []
    for index, path in enumerate(paths):
        print(f"{path.name} …", file=sys.stderr, flush=True)
        try:
            real = load(path, args.max_shape)
            if index == 0:
                for denoiser in denoisers:  # pays one-off costs before the first timed call
                    denoiser.denoise(Volume(centre_crop(real.array, (32, 32, 32)), real.volume.geometry))
            tables += table_rows(real, run_volume(real, denoisers, args.skip))
        except (MedicalDenoiseError, ValueError, RuntimeError) as error:
            skipped.append(f"`{path.name}`: {error}")
            print(f"  skipped: {error}", file=sys.stderr)
    section = report(tables, skipped, args, denoisers)
    publish(section, args.out, "real-noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
