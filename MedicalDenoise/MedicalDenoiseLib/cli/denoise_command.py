"""``medical-denoise denoise INPUT OUTPUT``: a file, a DICOM series folder, or a folder of inputs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.denoiser import Denoiser
from ..inference.grain import parse_grain
from ..inference.model_choice import default_model_for
from ..inference.strength import STRENGTHS, parse_strength
from ..inference.devices import DEVICE_CHOICES
from ..errors import InputError, MedicalDenoiseError, OutputError
from ..io.formats import SUPPORTED_DESCRIPTION, is_dicom_folder, is_image_file
from ..io.reading import read_volume
from ..io.writing import write_volume
from ..inference.normalization import MODALITIES
from ..evaluation.preview import comparison_png
from ..adaptation.fine_tune import DEFAULT_MINUTES, adapt_to_scan
from ..adaptation.fitted_series import other_series_note
from ..models.model_files import save_model
from .adapt_command import check_model_output, minutes
from .batch_ranks import BatchRanks
from .parent_watch import exit_with_parent
from .progress import PROGRESS_MODES, make_progress

__all__ = ["add_parser", "run"]


def _strength(value: str):
    try:
        return parse_strength(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grain(value: str):
    try:
        return parse_grain(value) or "auto"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="registry name (see `medical-denoise models`) or a .safetensors file; default: the "
                        "shipped default for the image's modality")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where the network runs (default: auto)")
    parser.add_argument("--tile", type=int, default=None, help="largest tile edge in voxels (default: 160 on CPU, 192 on GPU)")
    parser.add_argument("--flips", action="store_true", help="average over the 8 axis flips: slightly better, 8x slower")
    parser.add_argument("--no-refine", action="store_true", help="keep the network's output as it is: no Wiener "
                        "refinement with the scan's noise spectrum (which gives back detail the network took) and no "
                        "filtering in groups of similar cubes after it")


def add_parser(sub) -> None:
    p = sub.add_parser("denoise", help="denoise a file, a DICOM series folder, or a folder of files",
                       description="Denoise INPUT into OUTPUT on the input's exact voxel grid and pixel type.")
    p.add_argument("input", type=Path, help=f"input: {SUPPORTED_DESCRIPTION}, or a folder of such files")
    p.add_argument("output", type=Path, help="output file (format from the extension), a folder for a DICOM series, "
                   "or a folder when INPUT is a folder of files")
    add_model_options(p)
    p.add_argument("--strength", type=_strength, default="auto",
                   help=f"auto (estimated noise), {', '.join(STRENGTHS)}, or the noise SD in image units (e.g. 25 for 25 HU)")
    p.add_argument("--grain", type=_grain, default="auto",
                   help="auto (measure the noise grain and denoise on the sub-grids where it is white), one stride "
                        "for both in-plane axes (1: the whole image, 2: 2x2 sub-grids), or z,y,x strides (1,2,2)")
    p.add_argument("--modality", default="auto", choices=("auto", *MODALITIES), help="intensity normalisation (default: from the file or the intensities)")
    p.add_argument("--adapt", type=minutes, nargs="?", const=DEFAULT_MINUTES, metavar="MINUTES",
                   help=f"first fit the model to this scan, on the scan alone, within MINUTES (default {DEFAULT_MINUTES:g}) "
                        "including the denoising; the shipped model is kept when fitting does not help")
    p.add_argument("--save-adapted", type=Path, metavar="MODEL", help="with --adapt: also write the adapted model "
                   "(.safetensors) when one was kept")
    p.add_argument("--preview", type=Path, help="also write a PNG of the middle slice: input | denoised | residual")
    p.add_argument("--progress", default="auto", choices=PROGRESS_MODES, help="bar on a terminal, slicer for 3D Slicer, none")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument("--resume", action="store_true", help="skip inputs whose output exists (outputs appear only "
                   "once complete), e.g. to finish a batch that was stopped")
    p.add_argument("--exit-with-parent", type=int, metavar="PID",
                   help="stop, writing nothing, once process PID has ended (3D Slicer passes its own)")
    p.add_argument("--server", metavar="URL", help="denoise on a `medical-denoise serve` server (http://HOST:PORT): "
                   "the input is read and the output written here, as by a local run")
    p.add_argument("--token-file", type=Path, metavar="FILE", help="with --server: file holding the server's token")
    p.set_defaults(run=run)


def _check_output(input_path: Path, output: Path, overwrite: bool) -> None:
    if output.resolve() == input_path.resolve():
        raise OutputError(f"{output}: output would overwrite the input; choose another path")
    if output.exists() and not overwrite and not (output.is_dir() and not any(output.iterdir())):
        raise OutputError(f"{output}: already exists; use --overwrite to replace it or --resume to keep it")
    if not output.parent.exists():
        raise OutputError(f"{output}: folder {output.parent} does not exist")


def _jobs(args) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one for a file or a DICOM folder, one per image for a folder of inputs."""
    if not args.input.exists():
        raise InputError(f"{args.input}: no such file or folder")
    if args.input.is_file() or is_dicom_folder(args.input):
        _check_output(args.input, args.output, args.overwrite or args.resume)
        return [(args.input, args.output)]
    entries = sorted(p for p in args.input.iterdir() if is_image_file(p) or (p.is_dir() and is_dicom_folder(p)))
    if not entries:
        raise InputError(f"{args.input}: folder holds no images; supported: {SUPPORTED_DESCRIPTION}")
    if args.output.resolve() == args.input.resolve():
        raise OutputError(f"{args.output}: output folder is the input folder; choose another")
    if args.output.exists() and not args.output.is_dir():
        raise OutputError(f"{args.output}: INPUT is a folder, so OUTPUT must be a folder")
    if not args.output.parent.exists():
        raise OutputError(f"{args.output}: folder {args.output.parent} does not exist")
    jobs = [(entry, args.output / entry.name) for entry in entries]
    if args.output.exists():
        for source, target in jobs:
            _check_output(source, target, args.overwrite or args.resume)
    return jobs


class _Models:
    """One Denoiser per model, made on first use; without ``--model``, the registry's default for the modality
    each image is (tagged, or recognised from its intensities)."""

    def __init__(self, args) -> None:
        self.args = args
        self._loaded: dict[str, Denoiser] = {}

    def for_volume(self, volume) -> tuple[Denoiser, str]:
        """The Denoiser for ``volume`` and a note naming the model and why it was chosen."""
        args = self.args
        if args.model:
            name, why = args.model, "chosen with --model"
        else:
            name, why = default_model_for(volume, args.modality)
        if name not in self._loaded:
            self._loaded[name] = Denoiser(name, device=args.device, tile_size=args.tile, flips=args.flips,
                                          refine=not args.no_refine)
        return self._loaded[name], f"{name} ({why})"


def _adapted(denoiser: Denoiser, volume, args, progress) -> tuple[Denoiser, str]:
    """``--adapt``: the Denoiser of the model fitted to ``volume`` (or the shipped one when fitting did not help),
    and what was done, in words."""
    adaptation = adapt_to_scan(volume, denoiser.model, seconds=args.adapt * 60, modality=args.modality,
                               device=args.device, progress=lambda f: progress(_ADAPTING_SHARE * f),
                               refine=not args.no_refine)
    if not adaptation.kept:
        return denoiser, adaptation.describe()
    if args.save_adapted is not None:
        save_model(args.save_adapted, adaptation.model.network, adaptation.model.card)
    return Denoiser(adaptation.model, device=args.device, tile_size=args.tile, flips=args.flips,
                    refine=not args.no_refine), adaptation.describe()


# Of the progress bar under --adapt: fitting takes nearly all of the budget, the denoising pass the rest.
_ADAPTING_SHARE = 0.9


def _denoise_one(models: _Models, source: Path, target: Path, args, label: str) -> None:
    volume = read_volume(source)
    denoiser, chosen = models.for_volume(volume)
    progress = make_progress(args.progress, label)
    adapted = ""
    try:
        if args.adapt:
            denoiser, adapted = _adapted(denoiser, volume, args, progress)
            adapted = f"; {adapted}"
        elif (note := other_series_note(denoiser.model.card, volume.array)) is not None:
            print(f"medical-denoise: note: {source}: {note}", file=sys.stderr)
        share = _ADAPTING_SHARE if args.adapt else 0.0
        result = denoiser.denoise(volume, strength=args.strength, modality=args.modality, grain=args.grain,
                                  progress=lambda f: progress(share + (1 - share) * f))
    finally:
        progress.close()
    write_volume(result.volume, target, reference=volume, overwrite=args.overwrite)
    for message in result.messages:
        print(f"medical-denoise: note: {source}: {message}", file=sys.stderr)
    if result.network not in ("none", denoiser.name):
        chosen += f", slice by slice through its planar twin {result.network}"  # a 2D image, or one-slice sub-grids
    print(f"{source} -> {target}: {result.modality}, model {chosen}, noise SD "
          f"{result.estimated_sigma:.4g} estimated, {result.used_sigma:.4g} used, {result.seconds:.1f} s on "
          f"{result.device}; {result.describe()}{adapted}", flush=True)
    if args.preview is not None:
        preview = args.preview if len(args.jobs) == 1 else args.preview.with_name(f"{target.stem}_{args.preview.name}")
        comparison_png(preview, [("input", volume.array), ("denoised", result.volume.array),
                                 ("residual", volume.array.astype("float32") - result.volume.array)])


def _check_adapt_options(args) -> None:
    if args.save_adapted is None:
        return
    if not args.adapt:
        raise OutputError(f"{args.save_adapted}: --save-adapted needs --adapt")
    if len(args.jobs) > 1:
        raise OutputError(f"{args.save_adapted}: --save-adapted takes one input, not a folder of inputs")
    check_model_output(args.save_adapted, args.overwrite)


def run(args) -> int:
    if args.exit_with_parent is not None:
        exit_with_parent(args.exit_with_parent)
    batch = BatchRanks.from_environment(resume=args.resume)  # this process's share when torchrun started several
    with batch.checks(args):  # every process checks before any writes; sets this process's device
        args.jobs = _jobs(args)
        if args.server is not None:  # checked here too: the options, the token, the server and --model
            from ..server.client import connect, denoise_file
            models = connect(args)
        elif args.token_file is not None:
            raise MedicalDenoiseError(f"{args.token_file}: --token-file goes with --server")
        else:
            _check_adapt_options(args)
            models = _Models(args)
            if args.model:
                models.for_volume(None)  # a bad --model or device fails before anything is read or written
    batch_folder = args.output if args.input.is_dir() and args.jobs[0][0] != args.input else None
    with batch.writing(batch_folder, len(args.jobs)):  # then the summary; an empty new folder is removed
        for index, (source, target) in batch.mine(args.jobs):
            label = f"[{index}/{len(args.jobs)}] {source.name}" if len(args.jobs) > 1 else source.name
            try:
                if args.server is not None:
                    denoise_file(models, source, target, args, lambda: make_progress(args.progress, label))
                else:
                    _denoise_one(models, source, target, args, label)
                batch.denoised += 1
            except MedicalDenoiseError as exc:
                batch.failed(exc, alone=len(args.jobs) == 1)
    return batch.exit_code
