"""Reading a file or DICOM series into a :class:`Volume`, geometry included.

Whatever goes wrong with a user's file is reported as a one-line ``InputError`` that starts with the path.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .formats import (DICOM_EXTENSIONS, IMAGE_EXTENSIONS, SUPPORTED_DESCRIPTION, dicom_series_ids, file_extension,
                      has_dicom_preamble)
from .volume import Geometry, Volume

__all__ = ["read_volume"]

_MODALITIES = {"CT": "ct", "MR": "mr", "US": "us"}
_TAG = re.compile(r"[0-9a-fA-F]{4}\|[0-9a-fA-F]{4}")
_COMPLEX = (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64)


def read_volume(path: str | os.PathLike) -> Volume:
    """Reads a scalar 2D or 3D image, or the DICOM series in a folder.

    Args:
        path: an image file (see ``SUPPORTED_DESCRIPTION``), a folder holding a DICOM series (the series with
            the most files when there are several), or one file of a DICOM series (the whole series is read).

    Returns:
        A ``Volume`` whose array is (z, y, x), or (y, x) for a 2D image, in the file's pixel type (a DICOM
        series whose rescaled values are whole numbers in int16 range, as CT in HU, comes back as int16).
        The geometry is SimpleITK's spacing / origin / direction, as read. For DICOM, ``modality`` comes from
        the Modality tag and ``metadata`` holds the first slice's public tags.

    Raises:
        InputError: the path is missing, empty, unreadable, or not a scalar 2D/3D image.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        return _read_dicom_folder(p)
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file (0 bytes); supported: {SUPPORTED_DESCRIPTION}")
    ext = file_extension(p)
    if ext in DICOM_EXTENSIONS or (ext not in IMAGE_EXTENSIONS and has_dicom_preamble(p)):
        return _read_dicom_file(p)
    if ext not in IMAGE_EXTENSIONS:
        kind = f"'{ext}'" if ext else "(no extension)"
        raise InputError(f"{p}: unsupported file type {kind}; supported: {SUPPORTED_DESCRIPTION}")

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        # Check the header before loading, so a huge 4D or colour file is refused quickly.
        reader.ReadImageInformation()
        _check_pixels(p, reader.GetDimension(), reader.GetSize(), reader.GetPixelID(),
                      reader.GetNumberOfComponents())
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(_unreadable(p, err)) from None
    return _to_volume(_squeeze_to_3d(image, p), p)


def _read_dicom_folder(folder: Path) -> Volume:
    series = dicom_series_ids(folder)
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series; supported: {SUPPORTED_DESCRIPTION}")
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series), key=len)
    return _read_dicom_files(folder, list(files))


def _read_dicom_file(path: Path) -> Volume:
    """One file of a series stands for the whole series, as users pick a file when they mean the scan."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(_unreadable(path, err)) from None
    uid = reader.GetMetaData("0020|000e").strip(" \x00") if reader.HasMetaDataKey("0020|000e") else ""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), uid) if uid else ()
    if str(path) not in files and os.path.abspath(path) not in map(os.path.abspath, files):
        files = (str(path),)
    return _read_dicom_files(path, list(files))


def _read_dicom_files(path: Path, files: list[str]) -> Volume:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(_unreadable(path, err)) from None
    _check_pixels(path, image.GetDimension(), image.GetSize(), image.GetPixelID(),
                  image.GetNumberOfComponentsPerPixel())
    metadata = {}
    for key in reader.GetMetaDataKeys(0):
        if _TAG.fullmatch(key):
            try:
                metadata[key.lower()] = reader.GetMetaData(0, key).strip(" \x00")  # DICOM pads to even length
            except UnicodeDecodeError:  # a value in a character set other than UTF-8: not worth failing for
                continue
    volume = _to_volume(_squeeze_to_3d(image, path), path)
    volume.array = _narrow_to_int16(volume.array, metadata.get("0028|0100"))
    volume.modality = _MODALITIES.get(metadata.get("0008|0060", "").upper())
    volume.metadata = metadata
    return volume


def _check_pixels(path: Path, dimension: int, size, pixel_id: int, components: int) -> None:
    if pixel_id in _COMPLEX:
        raise InputError(f"{path}: has complex pixels; supported: {SUPPORTED_DESCRIPTION}")
    if components != 1:
        raise InputError(f"{path}: has {components} components per pixel (colour or vector image); "
                         f"supported: {SUPPORTED_DESCRIPTION}")
    if dimension > 3 and any(s != 1 for s in size[3:]):
        raise InputError(f"{path}: {dimension}D images are not supported (size {'x'.join(map(str, size))}); "
                         f"supported: {SUPPORTED_DESCRIPTION}")
    if dimension < 2:
        raise InputError(f"{path}: {dimension}D images are not supported; supported: {SUPPORTED_DESCRIPTION}")


def _squeeze_to_3d(image: sitk.Image, path: Path) -> sitk.Image:
    """Drops trailing dimensions of size 1 (a 3D volume saved as 4D with one time point)."""
    if image.GetDimension() <= 3:
        return image
    size = image.GetSize()
    try:
        return sitk.Extract(image, [*size[:3]] + [0] * (len(size) - 3), [0] * len(size),
                            sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    except RuntimeError:  # the 3D part of the direction is singular: no sensible 3D grid
        raise InputError(f"{path}: {len(size)}D images are not supported (size {'x'.join(map(str, size))}); "
                         f"supported: {SUPPORTED_DESCRIPTION}") from None


def _to_volume(image: sitk.Image, path: Path) -> Volume:
    geometry = Geometry(
        spacing=tuple(image.GetSpacing()), origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection())
    )
    return Volume(array=sitk.GetArrayFromImage(image), geometry=geometry, source=str(path))


def _narrow_to_int16(array: np.ndarray, bits_allocated: str | None) -> np.ndarray:
    """int16 for 16-bit DICOM that SimpleITK widened while rescaling, when no value changes.

    A CT stored as 16 bits with intercept -1024 comes back as int32 or float64; as int16 it takes a quarter of
    the memory and the output keeps the input's pixel type.
    """
    if bits_allocated != "16" or array.dtype == np.int16 or array.size == 0:
        return array
    if array.dtype.kind not in "iuf" or (array.dtype.kind in "iu" and array.dtype.itemsize <= 2):
        return array  # already what the file holds
    lo, hi = array.min(), array.max()
    if not (np.isfinite(lo) and np.isfinite(hi) and -32768 <= lo and hi <= 32767):
        return array
    if array.dtype.kind == "f" and not np.array_equal(array, np.rint(array)):
        return array
    return array.astype(np.int16)


def _unreadable(path: Path, err: RuntimeError) -> str:
    """One line for a SimpleITK error, whose own text spans many lines and names source files."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown error"
    if "Unable to determine ImageIO reader" in reason:
        reason = "its content does not match its file type"
    reason = re.sub(r"^(sitk|itk)::ERROR:\s*", "", reason)
    reason = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", reason)
    reason = re.sub(r"^\[\w+\]\s*\w+:\s*", "", reason)
    reason = reason if len(reason) <= 120 else reason[:117] + "..."
    return f"{path}: cannot be read as an image ({reason}); supported: {SUPPORTED_DESCRIPTION}"
