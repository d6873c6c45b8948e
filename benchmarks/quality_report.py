"""What the quality benchmark writes: one markdown section per volume (methods × settings) and a PNG of
each method's output above its residual."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from _common import command_line, ensure_library_importable, machine_line, utc_now
from quality_volumes import FOREGROUND_DILATION, FOREGROUND_THRESHOLD, CleanVolume, setting_label, shape_text

ensure_library_importable()
from MedicalDenoiseLib.evaluation.baselines import bm4d_available, dipy_available  # noqa: E402
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.preview import comparison_grid_png  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402

class Score(NamedTuple):
    psnr: float
    ssim: float
    ssim_foreground: float | None  # None: no foreground in the scored region
    seconds: float | None  # None: not timed (the noisy input, a re-scored output)
    params: str  # parameters chosen or told, for the notes under the table


def write_preview(png: Path, volume: CleanVolume, columns: list[tuple], noisy: np.ndarray) -> str:
    """Two-row PNG: each output's middle axial slice above its residual (the input it saw − output).

    Under "noisy" sits the noise actually added (noisy − clean). All residuals share ±3 × the SD of that
    noise, so a method that removed anatomy shows structure, one that left noise shows little. Returns the
    caption.
    """
    top = [(label, out) for label, out, _ in columns]
    bottom = [("residual: noise added", noisy - volume.array)]
    bottom += [None if seen is None else (f"residual {label}", seen - out) for label, out, seen in columns[1:]]
    low, high = np.percentile(volume.array[volume.array.shape[0] // 2], [1, 99])
    noise_sd = float(np.std(noisy - volume.array))
    png.parent.mkdir(parents=True, exist_ok=True)
    comparison_grid_png(png, [top, bottom], window=(low, high) if high > low else None,
                        residual_half_width=3 * noise_sd if noise_sd > 0 else None)
    return (f"Top row, left to right: {' | '.join(label for label, _ in top)} (all in the clean slice's 1–99 % "
            "window). Bottom row: the residual (input − output) under each, mid-grey = 0, ±3 × the added noise's "
            "SD; under *noisy* the noise that was added, under *clean* nothing.")


def _cell(score: Score | None) -> str:
    if score is None:
        return "–"
    foreground = "–" if score.ssim_foreground is None else f"{score.ssim_foreground:.3f}"
    text = f"{score.psnr:.1f} / {score.ssim:.3f} / {foreground}".replace(" 0.", " .")
    if score.seconds is None:
        return text
    return f"{text} / {score.seconds:.1f}" if score.seconds < 100 else f"{text} / {score.seconds:.0f}"


def volume_report(volume: CleanVolume, results: dict[str, dict[str, Score]], failures: list[str],
                  preview: tuple[str, str] | None, bm4d_crop: int, bm4d_ran: bool) -> list[str]:
    """The markdown of one volume: heading, table (methods × settings), parameters, notes, PNG."""
    rows = list(dict.fromkeys(row for scores in results.values() for row in scores))
    foreground = ("none above the threshold" if volume.foreground is None
                  else f"{volume.foreground.mean():.0%} of the voxels")
    lines = [
        f"### {volume.spec.description}",
        "",
        f"- {volume.source}, normalised as {volume.modality.upper()}; data range {volume.data_range:g} "
        f"(noise SD and PSNR are relative to it); foreground {foreground}",
        "",
        "| method | " + " | ".join(setting_label(t) for t in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    lines += [f"| {row} | " + " | ".join(_cell(results[t].get(row)) for t in results) + " |" for row in rows]
    chosen = []
    for row in rows:
        per_setting = [f"{setting_label(t)}: {results[t][row].params}" for t in results
                       if row in results[t] and results[t][row].params]
        if per_setting:
            chosen.append(f"- {row}: " + "; ".join(per_setting))
    if chosen:
        lines += ["", "<details><summary>Parameters chosen (oracle-tuned on the clean volume, or told the true σ; "
                  "models: the σ they estimated)</summary>", "", *chosen, "", "</details>"]
    if bm4d_crop and bm4d_ran:
        crop_shape = shape_text(centre_crop(volume.array, bm4d_crop).shape)
        lines.append(f"\nBM4D ran on the centre {crop_shape} voxels only, to save time; each model row marked "
                     f"'centre {bm4d_crop}³' scores that model's output on the same voxels.")
    if failures:
        lines += ["", "Failed (the cell shows –):", "", *[f"- {failure}" for failure in failures]]
    if preview:
        png, caption = preview
        lines += ["", f"![middle axial slices and residuals]({Path(png).name})", "", caption]
    return lines


def report(volumes: list[CleanVolume], results: dict, failures: dict, previews: dict, skipped: list[str],
           args: argparse.Namespace, denoisers: dict[str, Denoiser], bm4d_ran: bool) -> str:
    """The whole markdown section: shared context, then one sub-section per volume, then caveats."""
    models = ", ".join(f"`{d.name}`" for d in denoisers.values()) or "(skipped)"
    device = ", ".join(sorted({str(d.device) for d in denoisers.values()})) or "–"
    lines = [
        "## Quality",
        "",
        f"- Models: {models}, each blind (estimates the noise itself); device {device}"
        f"{', test-time flips' if args.flips else ''}",
        f"- Machine: {machine_line(torch.__version__, f'{torch.get_num_threads()} torch threads')}",
        f"- Date: {utc_now()}; noise seed {args.seed}",
        f"- Command: `{command_line()}`",
        "",
        "Each cell: **PSNR dB / 3D SSIM / 3D SSIM over the foreground / seconds**. Noise SD is a fraction of "
        "the normalised range (CT: 2000 HU; MR: the 99.5th percentile of the non-zero voxels). The foreground "
        f"is the clean volume above {FOREGROUND_THRESHOLD:g} of that range, dilated by {FOREGROUND_DILATION} "
        "voxels (the body, not the air around it).",
    ]
    for volume in volumes:
        key = volume.spec.key
        lines += ["", *volume_report(volume, results[key], failures[key], previews.get(key), args.bm4d_crop, bm4d_ran)]
    if skipped:
        lines += ["", "Volumes not run:", "", *[f"- {note}" for note in skipped]]
    lines += ["", "Caveats: the `best …` baselines pick their parameters with the clean image and their seconds "
              "include the whole parameter search; NLM, DIPY NLM and BM4D are told the true noise SD (for CT-like "
              "noise the SD added, though BM4D and NLM assume white noise); the models are told nothing. The real "
              "volumes keep their own noise in the reference, which caps PSNR and penalises removing it. Seconds "
              "are wall time on this machine (baselines use their own threading)."]
    if not bm4d_available():
        lines.append("\nBM4D was not run: `pip install bm4d` to include it.")
    if not dipy_available():
        lines.append("\nDIPY NLM was not run: `pip install dipy` to include it.")
    return "\n".join(lines)
