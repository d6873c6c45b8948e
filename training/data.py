"""Finding the training volumes in a folder, matching noisy/clean pairs, and the split by volume.

A volume is an image file the library reads (NRRD, NIfTI, MetaImage, TIFF, a lone DICOM file) or a folder
holding a DICOM series; folders are searched recursively. Volumes are named by their path relative to the
data folder, and those names drive the split and the model card.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MedicalDenoiseLib.io.formats import (
    DICOM_EXTENSIONS, IMAGE_EXTENSIONS, SUPPORTED_DESCRIPTION, file_extension, is_dicom_file, is_dicom_folder,
    is_image_file,
)

from .errors import DataError

__all__ = ["VolumeSource", "find_volumes", "find_pairs", "split_by_volume", "matches_any", "volume_stem"]

PAIRED_FOLDERS = ("noisy", "clean")


@dataclass(frozen=True)
class VolumeSource:
    """One volume on disk.

    Attributes:
        name: path relative to the data folder (posix), unique within it.
        path: the image file or DICOM series folder.
        target: for paired data, the matching clean volume; else None.
    """

    name: str
    path: Path
    target: Path | None = None


def volume_stem(name: str) -> str:
    """The name without its image extension: pairs are matched on this (``a.nii.gz`` ~ ``a.nrrd``)."""
    extension = file_extension(Path(name))
    return name[: -len(extension)] if extension in IMAGE_EXTENSIONS + DICOM_EXTENSIONS else name


def matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when ``name`` (or its last part) equals or glob-matches one of ``patterns``."""
    base = name.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(base, p) for p in patterns)


def _check_folder(folder: Path, flag: str) -> None:
    if not folder.exists():
        raise DataError(f"{flag} {folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{flag} {folder}: not a folder (give the folder that holds the volumes)")


def find_volumes(
    folder: str | os.PathLike, exclude: tuple[str, ...] = (), flag: str = "--data", include: tuple[str, ...] = ()
) -> list[VolumeSource]:
    """Every volume under ``folder`` (or those ``include`` names), sorted by name.

    Args:
        folder: the data folder.
        exclude: names or globs to leave out.
        flag: how the folder was given, for messages.
        include: names or globs of the volumes to keep (empty: all); each must match at least one volume.

    Raises:
        DataError: the folder is missing, not a folder, holds no volume, or none for an ``include`` entry.
    """
    root = Path(folder)
    _check_folder(root, flag)
    found: list[VolumeSource] = []
    for current, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(current)
        dicom_here = any(is_dicom_file(here / f) for f in files) and is_dicom_folder(here)
        if dicom_here and here != root:
            found.append(VolumeSource(here.relative_to(root).as_posix(), here))
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or not is_image_file(path):
                continue
            if dicom_here and is_dicom_file(path):
                continue
            found.append(VolumeSource(path.relative_to(root).as_posix(), path))
        if dicom_here and here == root:
            found.append(VolumeSource(".", here))
    names = [v.name for v in found]
    unmatched = [p for p in include if not any(matches_any(n, (p,)) for n in names)]
    if unmatched:
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise DataError(f"data.include {unmatched} match none of the volumes in {flag} {root}: {shown or 'none'}")
    volumes = [v for v in found if (not include or matches_any(v.name, include)) and not matches_any(v.name, exclude)]
    if not volumes:
        left_out = f" ({len(found)} left out by data.{'include and data.' if include else ''}exclude)" if found else ""
        raise DataError(f"{flag} {root}: holds no volumes{left_out}; supported: {SUPPORTED_DESCRIPTION}")
    return sorted(volumes, key=lambda v: v.name)


def find_pairs(
    folder: str | os.PathLike, exclude: tuple[str, ...] = (), flag: str = "--data", include: tuple[str, ...] = ()
) -> list[VolumeSource]:
    """Noisy/clean pairs from ``folder/noisy`` and ``folder/clean``, matched by name without extension.

    ``include`` and ``exclude`` apply to both sides alike (globs such as ``case7.*`` match both).

    Raises:
        DataError: a missing sub-folder, an empty one, or volumes without a partner (listed).
    """
    root = Path(folder)
    _check_folder(root, flag)
    missing = [name for name in PAIRED_FOLDERS if not (root / name).is_dir()]
    if missing:
        raise DataError(f"{flag} {root}: paired data needs sub-folders noisy/ and clean/ with matching file names; "
                        f"missing: {', '.join(m + '/' for m in missing)}")
    noisy = {volume_stem(v.name): v for v in find_volumes(root / "noisy", exclude, f"{flag} (noisy/)", include)}
    clean = {volume_stem(v.name): v for v in find_volumes(root / "clean", exclude, f"{flag} (clean/)", include)}
    problems = []
    for side, these, others in (("noisy", noisy, clean), ("clean", clean, noisy)):
        lonely = sorted(these[k].name for k in set(these) - set(others))
        if lonely:
            shown = ", ".join(lonely[:5]) + (f" and {len(lonely) - 5} more" if len(lonely) > 5 else "")
            problems.append(f"{len(lonely)} in {side}/ without a partner: {shown}")
    if problems:
        raise DataError(f"{flag} {root}: unmatched pairs ({'; '.join(problems)}); noisy/ and clean/ volumes are matched "
                        "by name without extension")
    return [VolumeSource(noisy[k].name, noisy[k].path, clean[k].path) for k in sorted(noisy)]


def split_by_volume(
    names: list[str], fraction: float, held_out: tuple[str, ...] = (), seed: int = 0
) -> tuple[list[str], list[str]]:
    """Training and validation names: whole volumes go to one side, never patches of one volume to both.

    Args:
        names: all volume names.
        fraction: share held out when ``held_out`` is empty (rounded, at least one of two or more volumes;
            0 holds none out).
        held_out: names or globs to hold out.
        seed: the shuffle before taking ``fraction`` of the volumes.

    Raises:
        DataError: ``held_out`` matching nothing, or every volume.
    """
    if held_out:
        validation = [n for n in names if matches_any(n, held_out)]
        if not validation:
            raise DataError(f"validation.volumes {list(held_out)} match none of the volumes: {', '.join(names[:8])}")
    elif fraction > 0 and len(names) >= 2:
        count = min(len(names) - 1, max(1, round(fraction * len(names))))
        order = np.random.default_rng(seed).permutation(len(names))
        validation = sorted(names[i] for i in order[:count])
    else:
        validation = []
    training = [n for n in names if n not in validation]
    if not training:
        raise DataError(f"validation.volumes {list(held_out)} hold out every volume; none is left for training")
    return training, validation
