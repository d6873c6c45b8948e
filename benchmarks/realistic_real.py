"""Part 2 of the realistic-noise benchmark: the real scans, without a reference.

The measures and voxel sets are ``real_noisy.py``'s (noise left in the input's flattest quarter of the
foreground, edges kept on its strongest 2 %), reused as they are. Added here: every file of ``--data``
including the 2D frame sets (each frame denoised as a 2D image; a few frames), Slicer's anisotropic diffusion
as the reference filter, the method-noise image (input − output) of each method in a figure, and for CT the
radially averaged noise power spectrum in flat squares of tissue before and after, with its peak and mean
frequency (noise moved to low frequencies looks "plastic").
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from _common import HELD_OUT_FILES, ensure_library_importable
from real_noisy import FLAT_FRACTION, EDGE_FRACTION, FOREGROUND_THRESHOLD, RealVolume, Row, load, measure, table_rows
from realistic_methods import DIFFUSION_SLICER, geometry_for, slicer_diffusion

ensure_library_importable()
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.noise_power import (extract_rois, flat_rois, mean_frequency,  # noqa: E402
                                                      peak_frequency, radial_nps)
from MedicalDenoiseLib.evaluation.preview import comparison_grid_png  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import (flat_region_mask, foreground_mask,  # noqa: E402
                                                         strong_edge_mask)
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer  # noqa: E402
from MedicalDenoiseLib.io.formats import is_image_file  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.volume import Volume  # noqa: E402

# Frame sequences (frames along z are separate 2D images, not a volume); a 2D file is one frame.
FRAME_SEQUENCES = ("us_prostate_trus_phantom_plus.mha", "us_curvilinear_ultrasonix_plus.mha",
                   "us_curvilinear_bk_plus.mha")
UNSEEN_FILES = HELD_OUT_FILES  # no shipped model was trained on them
NPS_ROI_MM = 14.0  # squares this small fit inside organs; larger ones catch anatomy as low-frequency "noise"
NPS_ROI_PX = (12, 16)  # ... but never fewer pixels than 12 or more than 16
NPS_ROIS = 64
FIGURE_EDGE = 128  # figure panels: the centre of the middle slice (or frame)

Denoise = Callable[[np.ndarray], np.ndarray]


@dataclass
class NpsRow:
    method: str
    sd: float  # in the ROIs, HU
    peak: float  # cycles/mm
    mean: float  # cycles/mm
    removed_mean: float | None  # mean frequency of the method noise (input − output), cycles/mm


def load_frames(path: Path, frames: int, max_shape: tuple[int, int, int]) -> RealVolume:
    """Up to ``frames`` evenly spaced frames of a frame set (a 2D file is one), stacked along z, in-plane
    centre-cropped; the voxel sets are chosen per frame like ``real_noisy.load`` does per slice."""
    volume = read_volume(path)
    array = volume.array.astype(np.float32)
    array = array[None] if array.ndim == 2 else array
    picks = np.unique(np.linspace(0, len(array) - 1, min(frames, len(array))).round().astype(int))
    array = centre_crop(array[picks], (None, *max_shape[1:]))
    normalizer = IntensityNormalizer.fit(array, "us")
    foreground = foreground_mask(normalizer.normalize(array), FOREGROUND_THRESHOLD, dilation=0, smoothing_sigma=0.0)
    if foreground.sum() < 100:
        foreground = np.ones(array.shape, dtype=bool)
    spacing = tuple(float(s) for s in volume.geometry.spacing[::-1])[-2:]
    return RealVolume(path.name, True, array, (1.0, *spacing), "us", normalizer,
                      flat_region_mask(array, foreground, FLAT_FRACTION), strong_edge_mask(array, foreground,
                                                                                            EDGE_FRACTION),
                      Volume(array, geometry_for((1.0, *spacing)), "us", source=path.name))


def methods_for(real: RealVolume, denoisers: Sequence[Denoiser], frames: bool) -> dict[str, Denoise]:
    """Each model (blind) and Slicer's diffusion; on a frame set every frame is denoised on its own."""
    spacing = real.spacing_zyx[-2:] if frames else real.spacing_zyx

    def model(denoiser: Denoiser) -> Denoise:
        return lambda image: denoiser.denoise(Volume(image, geometry_for(spacing)), modality=real.modality).volume.array

    def diffusion(image: np.ndarray) -> np.ndarray:
        filtered = slicer_diffusion(real.normalizer.normalize(image), spacing)
        return real.normalizer.denormalize_(filtered.astype(np.float32))

    chosen = {f"{d.name} (blind)": model(d) for d in denoisers}
    chosen[DIFFUSION_SLICER] = diffusion
    if not frames:
        return chosen
    return {name: (lambda run: lambda stack: np.stack([run(frame) for frame in stack]))(run)
            for name, run in chosen.items()}


def nps_rows(real: RealVolume, outputs: dict[str, np.ndarray]) -> tuple[list[NpsRow], int, int]:
    """NPS summary of the input and every output in the input's flattest tissue squares (CT only).

    Returns the rows, the square edge in pixels and how many squares were used (0: none found)."""
    pixel = float(real.spacing_zyx[-1])
    size = int(np.clip(round(NPS_ROI_MM / pixel / 2) * 2, *NPS_ROI_PX))
    tissue = foreground_mask(real.normalizer.normalize(real.array), FOREGROUND_THRESHOLD, dilation=0,
                             smoothing_sigma=1.0)
    corners = flat_rois(real.array, tissue, size, NPS_ROIS)
    if not corners:
        return [], size, 0
    rows = []
    for name, image in {"input": real.array, **outputs}.items():
        rois = extract_rois(image, corners, size)
        frequencies, nps = radial_nps(rois, pixel)
        removed = None
        if name != "input":
            removed = mean_frequency(*radial_nps(extract_rois(real.array - image, corners, size), pixel))
        rows.append(NpsRow(name, float(np.sqrt(np.mean(np.var(rois, axis=(1, 2))))),
                           peak_frequency(frequencies, nps), mean_frequency(frequencies, nps), removed))
    return rows, size, len(corners)


def write_figure(png: Path, real: RealVolume, outputs: dict[str, np.ndarray], noise_sd: float) -> str:
    """Top: input | each output; bottom: each method-noise image (input − output), ±3 × the input's flat SD."""
    def plane(image: np.ndarray) -> np.ndarray:
        return centre_crop(image[len(image) // 2], FIGURE_EDGE)

    top = [("input", plane(real.array)), *((name, plane(out)) for name, out in outputs.items())]
    bottom = [None, *((f"residual {name}", plane(real.array - out)) for name, out in outputs.items())]
    low, high = np.percentile(top[0][1], [1, 99])
    png.parent.mkdir(parents=True, exist_ok=True)
    comparison_grid_png(png, [top, bottom], window=(low, high) if high > low else None,
                        residual_half_width=3 * noise_sd if noise_sd > 0 else None)
    return (f"`{real.name}`: " + " | ".join(name for name, _ in top) + " (centre of the middle "
            f"{'frame' if real.name in FRAME_SEQUENCES else 'slice'}); below each output its method noise "
            "(input − output), ±3 × the input's flat-region SD: what was removed. Grain only is good; edges or "
            "texture of the anatomy in it were taken away.")


def run_one(real: RealVolume, denoisers: Sequence[Denoiser], frames: bool, out: Path | None
            ) -> tuple[list[str], list[str], str | None]:
    """One file: its table rows, NPS lines (CT) and figure markdown."""
    rows: list[Row] = [measure(real, "input", real.array, None)]
    outputs = {}
    for name, run in methods_for(real, denoisers, frames).items():
        print(f"  {real.name}: {name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        outputs[name] = np.asarray(run(real.array), dtype=np.float32)
        rows.append(measure(real, name, outputs[name], time.perf_counter() - started,
                            f"{len(real.array)} frame{'s' if len(real.array) > 1 else ''}, each as a 2D image"
                            if frames else ""))
    lines = table_rows(real, rows)
    nps_lines: list[str] = []
    if real.modality == "ct":
        summary, size, count = nps_rows(real, outputs)
        if summary:
            base = summary[0]
            nps_lines = [f"| {f'`{real.name}` ({count} squares of {size}² px)' if r is base else ''} | {r.method} | "
                         f"{r.sd:.1f} | {r.peak:.2f} | {r.mean:.2f} | {r.mean / base.mean:.2f} | "
                         f"{'–' if r.removed_mean is None else f'{r.removed_mean:.2f}'} |" for r in summary]
    figure = None
    if out:
        png = out.parent / f"realistic_real_{real.name.split('.')[0]}.png"
        caption = write_figure(png, real, outputs, rows[0].noise_sd)
        figure = f"![input, outputs and method noise]({png.name})\n\n{caption}"
    return lines, nps_lines, figure


def _is_2d(path: Path) -> bool:
    """Whether the file holds one 2D image (read from its header only)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetDimension() == 2 or 1 in reader.GetSize()[2:]


def run_part(data: Path, denoisers: Sequence[Denoiser], out: Path | None, *, files: Sequence[str] | None,
             max_shape: tuple[int, int, int], frames: int) -> tuple[list[str], list[str]]:
    """Every real file of ``data``: the noise / edges table, the CT NPS table, the figures."""
    paths = sorted(p for p in data.iterdir() if p.is_file() and is_image_file(p))
    if files:
        paths = [p for p in paths if any(part.lower() in p.name.lower() for part in files)]
    table, nps, figures, notes = [], [], [], []
    for path in paths:
        print(f"{path.name} …", file=sys.stderr, flush=True)
        try:
            is_frames = path.name in FRAME_SEQUENCES or _is_2d(path)
            real = load_frames(path, frames, max_shape) if is_frames else load(path, max_shape)
            real.held_out = path.name in UNSEEN_FILES
            rows, nps_lines, figure = run_one(real, denoisers, is_frames, out)
        except (ValueError, RuntimeError, OSError) as error:
            notes.append(f"`{path.name}`: not measured, {error}")
            print(f"  skipped: {error}", file=sys.stderr)
            continue
        table += rows
        nps += nps_lines
        figures += [figure] if figure else []
    lines = ["| volume | method | noise SD (flat) | noise left | edges kept | seconds | notes |",
             "|---|---|---|---|---|---|---|", *table]
    if nps:
        lines += ["", f"CT noise power spectrum in the input's flattest tissue squares (~{NPS_ROI_MM:g} mm, "
                  f"{NPS_ROI_PX[0]}–{NPS_ROI_PX[1]} px, at most {NPS_ROIS} per volume, each minus its fitted plane; "
                  "`evaluation.noise_power`), radially averaged: SD in the squares, the frequency of the NPS peak "
                  "and the NPS-weighted mean frequency (cycles/mm), that mean relative to the input's, and the mean "
                  "frequency of what was removed (the method noise in the same squares). A mean frequency well below "
                  "the input's is the \"plastic\" look.", "",
                  "| volume | method | SD (HU) | NPS peak | mean frequency | vs input | removed: mean frequency |",
                  "|---|---|---|---|---|---|---|", *nps]
    for figure in figures:
        lines += ["", figure]
    return lines, notes
