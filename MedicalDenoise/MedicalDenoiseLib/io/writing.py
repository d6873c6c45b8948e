"""Writing a :class:`Volume` on exactly the grid it carries, atomically, in the format its path names.

Whatever goes wrong is reported as a one-line ``OutputError`` that starts with the path; a failed write
leaves no partial file behind.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import OutputError
from .atomic import temporary_folder_beside
from .dicom_series import write_dicom_series
from .formats import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, SUPPORTED_DESCRIPTION, file_extension, is_dicom_file
from .volume import Geometry, Volume

__all__ = ["write_volume", "cast_to_dtype"]

_TWO_D_ONLY = (".png",)
_UNCOMPRESSED = (".png", ".tif", ".tiff", ".nii")  # formats where useCompression means nothing or hurts


def write_volume(volume: Volume, path: str | os.PathLike, *, reference: Volume | None = None,
                 overwrite: bool = False) -> None:
    """Writes a volume on its own geometry, atomically.

    The format follows the extension of ``path``; a path with no extension, one ending in '/', or an existing
    folder gets a DICOM series (one file per slice). Nothing is ever left half-written: the image goes to a
    temporary name in the same folder and is renamed into place, and the temporary is removed on any error.

    Args:
        volume: the voxels and the grid to write them on.
        path: the output file or DICOM folder.
        reference: the image the result was computed from. When given, the output has its pixel type (floats
            are rounded half to even, clipped to the type's range, NaN written as 0) and, for DICOM, its
            patient and study tags unless ``volume.metadata`` has them.
        overwrite: allow replacing an existing DICOM series folder (files are always replaced). The old
            series is swapped out only once the new one is complete, and only a folder that holds nothing
            but DICOM files is ever replaced.

    Raises:
        OutputError: the folder is missing or not writable, the format is unknown, or the format cannot hold
            this image (PNG: one 2D uint8/uint16 slice; PNG/TIFF: no origin or direction).
    """
    p = Path(path)
    as_dicom = str(path).endswith(("/", os.sep)) or p.is_dir() or file_extension(p) == ""
    ext = "" if as_dicom else file_extension(p)
    if ext in DICOM_EXTENSIONS:
        raise OutputError(f"{path}: a DICOM series is written into a folder; give a folder path without an "
                          "extension")
    if not as_dicom and ext not in IMAGE_EXTENSIONS:
        raise OutputError(f"{path}: unsupported output type '{ext}'; supported: {SUPPORTED_DESCRIPTION}")
    parent = p.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {parent} is not writable")

    array, geometry = volume.array, volume.geometry
    if not 2 <= array.ndim <= 3 or array.ndim != geometry.dimension:
        raise ValueError(f"volume must be a 2D or 3D array on a geometry of the same dimension, got array "
                         f"shape {array.shape} and a {geometry.dimension}D geometry")
    dtype = reference.array.dtype if reference is not None else array.dtype
    array = _cast(array, dtype)

    if as_dicom:
        metadata = volume.metadata or (reference.metadata if reference is not None else {})
        modality = volume.modality or (reference.modality if reference is not None else None)
        _write_dicom_atomically(array, geometry, p, metadata, modality, overwrite)
        return
    expected = geometry  # what the file must hold, even when written as 2D
    if ext in _TWO_D_ONLY:
        array, geometry = _as_2d(array, geometry, path, ext, reference)
    _write_file_atomically(array, geometry, p, ext, expected)


def cast_to_dtype(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as ``dtype``: integers rounded half to even and clipped to the type's range, NaN as 0."""
    return _cast(array, dtype)


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as ``dtype``: integers rounded half to even, clipped to the type's range, NaN as 0."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    elif dtype == np.float16:  # SimpleITK has no half floats
        dtype = np.dtype(np.float32)
    elif dtype.kind not in "iuf":
        raise ValueError(f"output pixel type must be integer or float, got {dtype}")
    if dtype.kind == "f" or (array.dtype.kind in "iub" and np.can_cast(array.dtype, dtype)):
        return array.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    if hi > info.max:  # int64 / uint64: the float bound rounded up past the type's range
        hi = float(np.nextafter(hi, 0.0))
    values = np.rint(np.asarray(array, dtype=np.float64))
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=hi, neginf=lo), lo, hi)
    return values.astype(dtype)


def _as_2d(array: np.ndarray, geometry: Geometry, path, ext: str, reference: Volume | None):
    """The single slice and pixel type a 2D-only format (PNG) can hold."""
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise OutputError(f"{path}: {ext} holds a single 2D image, but this volume has {array.shape[0]} "
                              "slices; use .nrrd, .nii.gz or .mha")
        d = geometry.direction
        array = array[0]
        geometry = Geometry(geometry.spacing[:2], geometry.origin[:2], (d[0], d[1], d[3], d[4]))
    if array.dtype not in (np.uint8, np.uint16):
        hint = (" (give the input image as reference to write its pixel type)" if reference is None
                and array.dtype.kind == "f" else "")
        raise OutputError(f"{path}: {ext} stores only uint8/uint16 pixels, got {array.dtype}{hint}; "
                          "use .nrrd, .nii.gz or .mha")
    return array, geometry


def _write_file_atomically(array: np.ndarray, geometry: Geometry, path: Path, ext: str,
                           expected: Geometry) -> None:
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name ending in {ext}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    # Write under the final name inside a temporary folder: .mhd/.nhdr headers name their data file, so the
    # pair must keep its final names; then move the data file(s) first and the header last.
    temp = _temporary_folder(path)
    try:
        written = temp / path.name
        sitk.WriteImage(image, str(written), ext not in _UNCOMPRESSED)
        problem = _geometry_mismatch(expected, written)
        if problem:
            raise OutputError(f"{path}: {ext} cannot store this image's {problem}; use .nrrd, .nii.gz or .mha")
        _flush_to_disk(temp)
        for item in sorted(temp.iterdir(), key=lambda f: f.name == path.name):
            os.replace(item, path.parent / item.name)
    except (RuntimeError, OSError) as err:
        raise OutputError(f"{path}: cannot be written ({_short(err)})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _write_dicom_atomically(array, geometry, path: Path, metadata, modality, overwrite: bool = False) -> None:
    replaced = path.exists() and path.is_dir() and any(path.iterdir())
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path}: exists and is not a folder; a DICOM series needs a folder")
        if replaced and not overwrite:
            raise OutputError(f"{path}: folder is not empty; give a new folder for the DICOM series")
        if replaced and not all(item.is_file() and is_dicom_file(item) for item in path.iterdir()):
            raise OutputError(f"{path}: folder holds files that are not DICOM; only a DICOM series folder is replaced")
    temp = _temporary_folder(path)
    old = path.parent / f"{temp.name}-old"
    try:
        write_dicom_series(array, geometry, temp, metadata=metadata, modality=modality)
        _flush_to_disk(temp)
        if path.exists():
            # Renaming onto a folder fails on Windows: move the old series aside, then remove it once the
            # new one is in place.
            os.replace(path, old)
        os.replace(temp, path)
        shutil.rmtree(old, ignore_errors=True)
    except (RuntimeError, OSError) as err:
        raise OutputError(f"{path}: cannot be written as a DICOM series ({_short(err)})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _flush_to_disk(folder: Path) -> None:
    """Flushes the files in ``folder`` to disk before they are renamed into place: after a power loss or a
    node crash, a name that made it to disk then never holds an empty or partial file."""
    for item in folder.iterdir():
        with open(item, "rb+") as handle:
            os.fsync(handle.fileno())


def _temporary_folder(path: Path) -> Path:
    try:
        return temporary_folder_beside(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot be written ({_short(err)})") from None


def _geometry_mismatch(expected: Geometry, written_file: Path) -> str | None:
    """What of ``expected`` the written file lost (PNG and TIFF keep no origin or direction), or None.

    The tolerances only catch lost geometry: NIfTI stores it in float32, PNG spacing in a few digits.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(written_file))
    reader.ReadImageInformation()
    got = Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection()))
    n, m = expected.dimension, got.dimension
    if m < n:
        # One slice written as 2D (PNG; NIfTI drops a trailing axis of size 1): the lost axis must have been
        # trivial, origin 0 and direction out of plane, else the file no longer places the slice.
        direction = np.eye(n)
        direction[:m, :m] = np.reshape(got.direction, (m, m))
        got = Geometry(got.spacing + expected.spacing[m:], got.origin + (0.0,) * (n - m),
                       tuple(direction.ravel()))
    elif m > n:
        return f"dimension ({n}D written as {m}D)"
    checks = (("spacing", expected.spacing, got.spacing, 1e-3, 0.0),
              ("origin", expected.origin, got.origin, 1e-5, 1e-4),
              ("direction", expected.direction, got.direction, 0.0, 1e-4))
    for name, want, have, rtol, atol in checks:
        if not np.allclose(have, want, rtol=rtol, atol=atol):
            return f"{name} ({_fmt(want)} would be written as {_fmt(have)})"
    return None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _short(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = re.sub(r"^(sitk|itk)::ERROR:\s*|\w+\(0x[0-9a-fA-F]+\):\s*", "", lines[-1] if lines else str(err))
    return reason if len(reason) <= 120 else reason[:117] + "..."
