"""Part 1 of the realistic-noise benchmark: simulated acquisitions scored against their noise-free twin.

For each setting of ``realistic_acquisitions.SETTINGS`` one noisy acquisition is drawn; every method denoises
it and is scored against ``realisation.clean`` on the source's crop (PSNR, 3D SSIM, SSIM over the foreground,
and the correlation of the residual input − output with the clean image's detail: anatomy in what was
removed) and again on BM4D's small centre crop, where BM4D ran, so all methods meet on the same voxels. On the
whole crop the texture is scored too: the output's high-frequency power relative to the clean image's, and the
error left on the clean image's flat voxels, where a method that invents texture stands out from one that smooths.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from _common import ensure_library_importable
from realistic_acquisitions import (SETTINGS, SOURCES, Prepared, Setting, acquire, bm4d_region, estimate_psd,
                                    prepare)
from realistic_methods import Method, Told, is_bm4d
from quality_volumes import shape_text

ensure_library_importable()
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.metrics import (error_sd_ratio, high_frequency_power_ratio,  # noqa: E402
                                                  psnr, residual_statistics, residual_structure_correlation,
                                                  ssim3d)
from MedicalDenoiseLib.evaluation.preview import comparison_grid_png  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import flat_region_mask  # noqa: E402

NOISY = "noisy input"
FIGURE_EDGE = 128  # figure panels are enlarged (nearest neighbour) to at least this many pixels
FLAT_FRACTION = 0.25  # share of the clean image's foreground (all voxels without one) taken as flat
FLAT_SMOOTHING = 1.5  # in-plane Gaussian SD (voxels) before the gradient that decides what is flat


@dataclass
class Scores:
    """One method on one setting; None where it was not scored (BM4D outside its crop)."""

    whole: tuple[float, float, float | None, float] | None  # PSNR, SSIM, foreground SSIM, residual r
    crop: tuple[float, float, float]  # PSNR, SSIM, residual r on BM4D's crop
    seconds: float | None
    note: str = ""
    texture: tuple[float, float] | None = None  # high-frequency power / clean, flat error left (whole crop)


@dataclass
class SettingResult:
    setting: Setting
    prepared: Prepared
    noise_sd: float  # realised, image units
    lag1: float  # mean lag-1 autocorrelation of the noise over the axes
    region: tuple[int, ...]
    scores: dict[str, Scores] = field(default_factory=dict)
    panels: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (name, crop out, crop in)
    failures: list[str] = field(default_factory=list)


def score(clean: np.ndarray, noisy: np.ndarray, output: np.ndarray, data_range: float,
          foreground: np.ndarray | None) -> tuple[float, float, float | None, float]:
    """PSNR, SSIM, foreground SSIM (None without a foreground) and residual-detail correlation."""
    fg = foreground if foreground is not None and foreground.any() else None
    return (psnr(clean, output, data_range), ssim3d(clean, output, data_range),
            None if fg is None else ssim3d(clean, output, data_range, mask=fg),
            residual_structure_correlation(clean, noisy, output))


def flat_voxels(clean: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    """The clean image's flattest voxels: the ``FLAT_FRACTION`` of the foreground (all voxels without one) with
    the lowest in-plane gradient. Chosen on the clean image so that neither the noise nor any output decides
    which voxels count, and every method is measured on the same ones."""
    fg = foreground if foreground is not None and foreground.any() else None
    return flat_region_mask(clean, fg, fraction=FLAT_FRACTION, smoothing_sigma=FLAT_SMOOTHING)


def texture(clean: np.ndarray, noisy: np.ndarray, output: np.ndarray, flat: np.ndarray) -> tuple[float, float]:
    """High-frequency power of the output relative to the clean image's (1: texture kept, below: smoothed,
    above: noise left or texture added) and the flat error left, SD(output − clean) / SD(noisy − clean) on
    ``flat`` (1 for the input, 0 for perfect): where the clean image has no texture, any made up shows here."""
    return high_frequency_power_ratio(clean, output), error_sd_ratio(clean, noisy, output, flat)


def run_setting(setting: Setting, prepared: Prepared, methods: Sequence[Method], seed: int,
                psd_realisations: int, bm4d_crop: tuple[int, ...] | None) -> SettingResult:
    """Draws the acquisition, runs every method, scores them; a failing method is noted, the rest go on."""
    realisation = acquire(setting, prepared, seed)
    clean, noisy = realisation.clean, realisation.noisy
    region = bm4d_region(prepared, bm4d_crop)

    def crop(array: np.ndarray) -> np.ndarray:
        return centre_crop(array, region)

    told = Told(clean, prepared.data_range, prepared.spacing, prepared.source.modality, realisation.sigma)
    told_crop = Told(crop(clean), prepared.data_range, prepared.spacing, prepared.source.modality,
                     float(np.std(crop(realisation.noise))))
    if any(is_bm4d(method) for method in methods):
        told_crop.psd = estimate_psd(setting, prepared, region, psd_realisations, seed)
    result = SettingResult(setting, prepared, realisation.sigma,
                           residual_statistics(noisy, clean)["lag1_autocorrelation"], region)
    flat = flat_voxels(clean, prepared.foreground)

    def crop_scores(out_crop: np.ndarray) -> tuple[float, float, float]:
        p, s, _, r = score(told_crop.clean, crop(noisy), out_crop, prepared.data_range, None)
        return p, s, r

    result.scores[NOISY] = Scores(score(clean, noisy, noisy, prepared.data_range, prepared.foreground),
                                  crop_scores(crop(noisy)), None, texture=texture(clean, noisy, noisy, flat))
    result.panels.append((NOISY, crop(noisy), crop(noisy)))
    for method in methods:
        print(f"  {setting.key}: {method.name} …", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            if is_bm4d(method):
                out, note = method.run(crop(noisy), told_crop)
                seconds = time.perf_counter() - started
                result.scores[method.name] = Scores(None, crop_scores(out), seconds, note)
                result.panels.append((method.name, out, crop(noisy)))
            else:
                out, note = method.run(noisy, told)
                seconds = time.perf_counter() - started
                result.scores[method.name] = Scores(score(clean, noisy, out, prepared.data_range, prepared.foreground),
                                                    crop_scores(crop(out)), seconds, note,
                                                    texture=texture(clean, noisy, out, flat))
                result.panels.append((method.name, crop(out), crop(noisy)))
        except Exception as error:  # noqa: BLE001 - one failing method must not lose the others' results
            result.failures.append(f"{method.name} on {setting.key}: {type(error).__name__}: {error}")
            print(f"  failed: {result.failures[-1]}", file=sys.stderr)
    result.panels.append(("clean", told_crop.clean, told_crop.clean))
    return result


def _enlarged(image: np.ndarray) -> np.ndarray:
    """The middle axial slice, repeated to at least ``FIGURE_EDGE`` pixels so small crops stay legible."""
    plane = image if image.ndim == 2 else image[image.shape[0] // 2]
    factor = max(1, math.ceil(FIGURE_EDGE / max(1, min(plane.shape))))
    return np.kron(plane, np.ones((factor, factor), np.float32))


def write_figure(png: Path, result: SettingResult) -> str:
    """Top: noisy | each method | clean on BM4D's crop; bottom: each residual (input − output), under noisy
    the noise itself; all residuals in one window ±3 × the noise SD. Returns the caption."""
    clean = result.panels[-1][1]
    top = [(name, _enlarged(out)) for name, out, _ in result.panels]
    bottom = [("residual noise", _enlarged(result.panels[0][1] - clean))]
    bottom += [(f"residual {name}", _enlarged(seen - out)) for name, out, seen in result.panels[1:-1]] + [None]
    plane = _enlarged(clean)
    low, high = np.percentile(plane, [1, 99])
    png.parent.mkdir(parents=True, exist_ok=True)
    comparison_grid_png(png, [top, bottom], window=(low, high) if high > low else None,
                        residual_half_width=3 * result.noise_sd if result.noise_sd > 0 else None)
    return ("Top, left to right: " + " | ".join(name for name, _, _ in result.panels) + f" (middle slice of the "
            f"{shape_text(result.region)} crop, clean image's 1–99 % window). Bottom: input − output under "
            "each, mid-grey = 0, ±3 × the noise SD; under the noisy input the noise itself. Anatomy in a "
            "residual is anatomy removed.")


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    # three digits are SSIM and correlations, written as .938 (a leading "0." only, never the "0." of 10.5)
    if digits == 3 and text.lstrip("-").startswith("0."):
        return text.replace("0.", ".", 1)
    return text


def headline(results: list[SettingResult], names: list[str]) -> list[str]:
    """Per setting: PSNR dB / residual r of every method on BM4D's crop (the voxels all of them were run on)."""
    lines = ["| setting | noise SD | lag-1 r | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for result in results:
        cells = []
        for name in names:
            scores = result.scores.get(name)
            cells.append("–" if scores is None else f"{_number(scores.crop[0])} / {_number(scores.crop[2], 3)}")
        sd = result.noise_sd / result.prepared.data_range
        lines.append(f"| {result.setting.key} | {sd:.1%} | {result.lag1:.2f} | " + " | ".join(cells) + " |")
    return lines


def texture_table(results: list[SettingResult], names: list[str], header: str, rule: str) -> list[str]:
    """Whole crop: the output's high-frequency power / the clean image's and the flat error left, per method."""
    foreground = results[0].prepared.foreground
    fg = "foreground" if foreground is not None and foreground.any() else "voxels"
    caption = ("Whole crop. High-frequency power: FFT power above half the Nyquist frequency, output / clean "
               "image (1: the clean texture kept; below: smoothed; above: noise left or texture added). "
               "Flat-region error left: SD(output − clean) / SD(noisy − clean) over the clean image's flattest "
               f"{FLAT_FRACTION:.0%} of the {fg} (lowest in-plane gradient after a {FLAT_SMOOTHING:g}-voxel "
               "Gaussian; 1: the input, 0: perfect; a method that adds texture scores higher than one that only "
               "smooths). The clean image's own grain counts as texture to keep: where it is strong next to the "
               "simulated noise, even a smoother scores above 1. – where a method ran on BM4D's crop only.")
    lines = ["Texture: high-frequency power / clean, flat-region error left", "", caption, "", header, rule]
    for name in names:
        cells = []
        for r in results:
            s = r.scores.get(name)
            cells.append("–" if s is None or s.texture is None else
                         f"{_number(s.texture[0], 2)} / {_number(s.texture[1], 2)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def source_report(results: list[SettingResult], names: list[str], figure: tuple[str, str] | None) -> list[str]:
    """One source: what was scored, the whole-crop, texture and BM4D-crop tables, parameters, failures, PNG."""
    prepared = results[0].prepared
    fg = "none" if prepared.foreground is None else f"{prepared.foreground.mean():.0%} of the voxels"
    lines = [f"#### {prepared.source.description}", "",
             f"- {prepared.described}; data range {prepared.data_range:g} (PSNR's peak); foreground {fg}; "
             f"BM4D crop {shape_text(results[0].region)}", ""]
    lines += ["Settings: " + "; ".join(f"**{r.setting.key}**: {r.setting.label}, realised noise SD "
                                       f"{r.noise_sd / prepared.data_range:.1%} of range" +
                                       (f" ({r.noise_sd:.1f} HU)" if prepared.source.modality == "ct" else "")
                                       for r in results), ""]
    header = "| method | " + " | ".join(r.setting.key for r in results) + " |"
    rule = "|---|" + "---|" * len(results)
    lines += ["Whole crop: PSNR dB / SSIM / foreground SSIM / residual r", "", header, rule]
    for name in names:
        cells = []
        for r in results:
            s = r.scores.get(name)
            cells.append("–" if s is None or s.whole is None else " / ".join(
                [_number(s.whole[0]), _number(s.whole[1], 3), _number(s.whole[2], 3), _number(s.whole[3], 3)]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *texture_table(results, names, header, rule)]
    lines += ["", f"BM4D's crop ({shape_text(results[0].region)}): PSNR dB / SSIM / residual r / seconds", "",
              header, rule]
    for name in names:
        cells = []
        for r in results:
            s = r.scores.get(name)
            seconds = "" if s is None or s.seconds is None else f" / {s.seconds:.1f}"
            cells.append("–" if s is None else " / ".join(
                [_number(s.crop[0]), _number(s.crop[1], 3), _number(s.crop[2], 3)]) + seconds)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = [f"- {name}: " + "; ".join(f"{r.setting.key}: {r.scores[name].note}" for r in results
                                       if name in r.scores and r.scores[name].note)
             for name in names if any(name in r.scores and r.scores[name].note for r in results)]
    if notes:
        lines += ["", "<details><summary>What each method was told or chose</summary>", "", *notes, "", "</details>"]
    failures = [f for r in results for f in r.failures]
    if failures:
        lines += ["", "Failed (the cell shows –):", "", *[f"- {f}" for f in failures]]
    if figure:
        lines += ["", f"![middle slices and residuals]({Path(figure[0]).name})", "", figure[1]]
    return lines


def run_part(data: Path | None, methods: Sequence[Method], out: Path | None, *, sources: Sequence[str] | None,
             settings: Sequence[str] | None, crop: tuple[int, ...] | None, bm4d_crop: tuple[int, ...] | None,
             psd_realisations: int, seed: int) -> tuple[list[str], list[str]]:
    """Runs the chosen settings; returns the markdown lines of the results and the notes on what did not run."""
    chosen = [s for s in SETTINGS if (not sources or s.source in sources) and (not settings or s.key in settings)]
    names = [NOISY, *(m.name for m in methods)]
    lines, notes, results_all = [], [], []
    for source in SOURCES:
        mine = [s for s in chosen if s.source == source.key]
        if not mine:
            continue
        try:
            prepared = prepare(source, data, crop)
        except (FileNotFoundError, ValueError) as error:
            notes.append(f"{source.description}: skipped, {error}")
            print(f"note: {notes[-1]}", file=sys.stderr)
            continue
        results, figure = [], None
        for setting in mine:
            print(f"{setting.key} …", file=sys.stderr, flush=True)
            results.append(run_setting(setting, prepared, methods, seed, psd_realisations, bm4d_crop))
            if out and (setting.figure or setting is mine[-1] and figure is None):
                png = out.parent / f"realistic_{setting.key}.png"
                figure = (str(png), write_figure(png, results[-1]))
        results_all += results
        lines += ["", *source_report(results, names, figure)]
    head = ["", "### Headline: PSNR dB / residual r on BM4D's crop (every method on the same voxels)", "",
            *headline(results_all, names)] if results_all else []
    return head + lines, notes
