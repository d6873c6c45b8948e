"""The clean volumes and noise settings the quality benchmarks run on: which files, how they are cropped
and normalised, and where the body is (for foreground SSIM)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from _common import ensure_library_importable

ensure_library_importable()
from MedicalDenoiseLib.errors import MedicalDenoiseError  # noqa: E402
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import foreground_mask  # noqa: E402
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer, guess_modality  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.sample_data import mni152_t1_path  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry  # noqa: E402
from MedicalDenoiseLib.noise.image_domain import NOISE_MODELS  # noqa: E402

MR_SETTINGS = ("gaussian:0.01", "gaussian:0.03", "gaussian:0.05", "gaussian:0.10", "rician:0.03", "rician:0.05")
CT_SETTINGS = ("gaussian:0.01", "gaussian:0.03", "gaussian:0.05", "gaussian:0.10", "ct:0.02", "ct:0.05")
DEFAULT_SETTINGS = {"mr": MR_SETTINGS, "ct": CT_SETTINGS, "us": MR_SETTINGS}
FOREGROUND_THRESHOLD = 0.1  # of the normalised range (CT: −800 HU; MR: a tenth of the bright tissue)
FOREGROUND_DILATION = 2  # voxels, so the body's outline counts as foreground


@dataclass(frozen=True)
class VolumeSpec:
    """One clean volume of the benchmark and how to cut it.

    Attributes:
        key: short name for ``--volumes``.
        stem: for the PNG's file name.
        file: file name inside ``--data``; None for the MNI template (nilearn) or ``--clean``'s path.
        crop: centred crop per axis (z, y, x); None keeps that axis whole.
        modality: normalisation (None: from the file's tag or the intensities).
        description: the table heading.
    """

    key: str
    stem: str
    file: str | None
    crop: tuple[int | None, int | None, int | None]
    modality: str | None
    description: str


DEFAULT_VOLUMES = (
    VolumeSpec("mni", "mni152_t1", None, (128, 128, 128), "mr",
               "MNI152 T1 1 mm template (nilearn; averaged, nearly noise-free, smooth)"),
    VolumeSpec("brain2", "mr_brain_t1gd_brain2", "mr_brain_t1gd_brain2_pyradiomics.nrrd", (None, 128, 128), "mr",
               "MR brain T1 + Gd, pyradiomics brain2 (real, held out from training; 6.5 mm slices)"),
    VolumeSpec("ct-abdomen", "ct_abdomen_3mm", "ct_abdomen_3mm_totalseg.nii.gz", (96, 96, 96), "ct",
               "CT abdomen, TotalSegmentator example, 3 mm (real, held out from training; smoothed by resampling)"),
)


@dataclass
class CleanVolume:
    """A loaded, cropped clean volume with what scoring needs."""

    spec: VolumeSpec
    array: np.ndarray  # float32 (z, y, x)
    geometry: Geometry
    modality: str
    data_range: float
    foreground: np.ndarray | None  # None: nothing above the threshold
    source: str
    settings: list[str] = field(default_factory=list)


def parse_setting(token: str) -> tuple[str, float]:
    """``"gaussian:0.05"`` → ("gaussian", 0.05): the noise SD as a fraction of the normalised range."""
    kind, _, value = token.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"setting must be KIND:FRACTION, e.g. gaussian:0.05, got {token!r}") from None
    if kind not in NOISE_MODELS:
        raise argparse.ArgumentTypeError(f"noise kind must be one of {', '.join(NOISE_MODELS)}, got {kind!r}")
    if not 0 < fraction < 1:
        raise argparse.ArgumentTypeError(f"noise fraction must be in (0, 1), got {fraction} in {token!r}")
    return kind, fraction


def setting_label(token: str) -> str:
    kind, fraction = parse_setting(token)
    name = "CT-like correlated" if kind == "ct" else kind.capitalize()
    return f"{name} {fraction * 100:g} %"


def shape_text(shape: Sequence[int]) -> str:
    """(z, y, x) as the usual ``x×y×z``."""
    return "×".join(str(n) for n in shape[::-1])


def load_clean(spec: VolumeSpec, path: Path, crop: int | None, modality: str) -> CleanVolume:
    """Reads, crops and normalises one clean volume; ``crop`` (an edge for every axis) overrides the spec's."""
    volume = read_volume(path)
    array = centre_crop(volume.array.astype(np.float32), spec.crop if crop is None else crop)
    chosen = guess_modality(array, volume.modality if modality == "auto" else modality)
    normalizer = IntensityNormalizer.fit(array, chosen)
    mask = foreground_mask(normalizer.normalize(array), FOREGROUND_THRESHOLD, FOREGROUND_DILATION)
    return CleanVolume(spec, array, volume.geometry, chosen, normalizer.scale, mask if mask.any() else None,
                       f"`{path.name}`, centre {shape_text(array.shape)} voxels (x×y×z)")


def resolve_volumes(args: argparse.Namespace) -> tuple[list[tuple[VolumeSpec, Path]], list[str]]:
    """The volumes to run, as (spec, path), and one note per volume skipped (file missing)."""
    if args.clean is not None:
        if not args.clean.exists():
            raise SystemExit(f"--clean {args.clean}: file not found; give a volume readable by SimpleITK")
        spec = VolumeSpec("clean", args.clean.name.split(".")[0], args.clean.name, (128, 128, 128), None,
                          f"`{args.clean.name}` (given with --clean)")
        return [(spec, args.clean)], []
    chosen, skipped = [], []
    for spec in DEFAULT_VOLUMES:
        if spec.key not in args.volumes:
            continue
        if spec.file is None:
            try:
                chosen.append((spec, mni152_t1_path()))
            except MedicalDenoiseError as error:
                skipped.append(f"{spec.description}: skipped, {error}")
            continue
        path = args.data / spec.file if args.data else None
        if path is None or not path.is_file():
            where = f"in {args.data}" if args.data else "(no --data folder; ../shared/data does not exist)"
            skipped.append(f"{spec.description}: skipped, `{spec.file}` not found {where}")
            continue
        chosen.append((spec, path))
    return chosen, skipped
