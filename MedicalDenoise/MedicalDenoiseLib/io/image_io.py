"""Reading and writing scalar 2D/3D images through SimpleITK, geometry included.

``read_volume`` turns a file or a DICOM series folder into a ``Volume``; ``write_volume`` writes a result on the
exact grid it is given, atomically, in the format its path names. Whatever goes wrong with a user's file is
reported as a one-line ``InputError`` / ``OutputError`` that starts with the path.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import temporary_folder_beside
from .dicom_series import write_dicom_series
from ..errors import InputError, OutputError
from .volume import Geometry, Volume

__all__ = ["SUPPORTED_DESCRIPTION", "read_volume", "write_volume", "is_image_file", "is_dicom_folder", "cast_to_dtype"]

SUPPORTED_DESCRIPTION = (
    "scalar 2D/3D images in .nrrd/.nhdr, .nii/.nii.gz, .mha/.mhd, .png, .tif/.tiff, "
    "or a DICOM series folder (or one of its files)"
)

# Longest first, so that ".nii.gz" wins over ".gz".
_FILE_EXTENSIONS = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".png", ".tiff", ".tif")
_DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
_TWO_D_ONLY = (".png",)
_UNCOMPRESSED = (".png", ".tif", ".tiff", ".nii")  # formats where useCompression means nothing or hurts
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
    ext = _extension(p)
    if ext in _DICOM_EXTENSIONS or (ext not in _FILE_EXTENSIONS and _has_dicom_preamble(p)):
        return _read_dicom_file(p)
    if ext not in _FILE_EXTENSIONS:
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


def write_volume(volume: Volume, path: str | os.PathLike, *, reference: Volume | None = None) -> None:
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

    Raises:
        OutputError: the folder is missing or not writable, the format is unknown, or the format cannot hold
            this image (PNG: one 2D uint8/uint16 slice; PNG/TIFF: no origin or direction).
    """
    p = Path(path)
    as_dicom = str(path).endswith(("/", os.sep)) or p.is_dir() or _extension(p) == ""
    ext = "" if as_dicom else _extension(p)
    if ext in _DICOM_EXTENSIONS:
        raise OutputError(f"{path}: a DICOM series is written into a folder; give a folder path without an "
                          "extension")
    if not as_dicom and ext not in _FILE_EXTENSIONS:
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
        _write_dicom_atomically(array, geometry, p, metadata, modality)
        return
    expected = geometry  # what the file must hold, even when written as 2D
    if ext in _TWO_D_ONLY:
        array, geometry = _as_2d(array, geometry, path, ext, reference)
    _write_file_atomically(array, geometry, p, ext, expected)


# --- reading -------------------------------------------------------------------------------------------------

def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file whose name or content says it is a readable image (a DICOM file included)."""
    p = Path(path)
    return p.is_file() and (_extension(p) in _FILE_EXTENSIONS + _DICOM_EXTENSIONS or _has_dicom_preamble(p))


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """True for a folder that directly holds at least one DICOM series."""
    return Path(path).is_dir() and bool(_series_ids(Path(path)))


def cast_to_dtype(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as ``dtype``: integers rounded half to even and clipped to the type's range, NaN as 0."""
    return _cast(array, dtype)


def _series_ids(folder: Path) -> tuple[str, ...]:
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's "No Series were found" is ours to say, once
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return ()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_folder(folder: Path) -> Volume:
    series = _series_ids(folder)
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


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in _FILE_EXTENSIONS + _DICOM_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _has_dicom_preamble(path: Path) -> bool:
    """DICOM files often have no extension; they say 'DICM' after a 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


# --- writing -------------------------------------------------------------------------------------------------

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
        for item in sorted(temp.iterdir(), key=lambda f: f.name == path.name):
            os.replace(item, path.parent / item.name)
    except (RuntimeError, OSError) as err:
        raise OutputError(f"{path}: cannot be written ({_short(err)})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _write_dicom_atomically(array, geometry, path: Path, metadata, modality) -> None:
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path}: exists and is not a folder; a DICOM series needs a folder")
        if any(path.iterdir()):
            raise OutputError(f"{path}: folder is not empty; give a new folder for the DICOM series")
    temp = _temporary_folder(path)
    try:
        write_dicom_series(array, geometry, temp, metadata=metadata, modality=modality)
        if path.exists():
            path.rmdir()  # empty (checked above); renaming onto a folder fails on Windows
        os.replace(temp, path)
    except (RuntimeError, OSError) as err:
        raise OutputError(f"{path}: cannot be written as a DICOM series ({_short(err)})") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


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
