"""Writing a volume as a DICOM series: one file per slice, in a folder of its own.

The output is a new *derived* series of the original study: patient and study tags are copied from the input's
metadata, the series and instance UIDs are new, and every slice carries its own ImagePositionPatient so that a
DICOM reader rebuilds exactly the input's grid. Follows SimpleITK's "Dicom Series From Array" and "Dicom Series
Read Modify Write" examples (ImageFileWriter with KeepOriginalImageUID on, tags set on each 2D slice).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .volume import Geometry

__all__ = ["new_uid", "write_dicom_series"]

# Tags of the patient, the study and the acquisition that the derived series shares with its source.
_COPIED_TAGS = (
    "0008|0005",  # SpecificCharacterSet: how the names below are encoded
    "0008|0020",  # StudyDate
    "0008|0030",  # StudyTime
    "0008|0050",  # AccessionNumber
    "0008|0060",  # Modality
    "0008|0090",  # ReferringPhysicianName
    "0008|1030",  # StudyDescription
    "0010|0010",  # PatientName
    "0010|0020",  # PatientID
    "0010|0030",  # PatientBirthDate
    "0010|0040",  # PatientSex
    "0018|0050",  # SliceThickness
    "0018|5100",  # PatientPosition
    "0020|000d",  # StudyInstanceUID
    "0020|0010",  # StudyID
    "0020|0052",  # FrameOfReferenceUID: same grid, same frame, so viewers can link the two series
    "0028|1050",  # WindowCenter
    "0028|1051",  # WindowWidth
)

_INT16 = np.iinfo(np.int16)
_UINT16 = np.iinfo(np.uint16)


def new_uid() -> str:
    """A new globally unique DICOM UID.

    Uses the ``2.25`` root, under which a UUID written as a decimal integer is a valid UID (ISO/IEC 9834-8,
    DICOM PS3.5 B.2): no organisation root has to be registered, and the result is at most 44 characters.
    """
    return "2.25." + str(uuid.uuid4().int)


def write_dicom_series(
    array: np.ndarray,
    geometry: Geometry,
    folder: Path,
    *,
    metadata: Mapping[str, str] | None = None,
    modality: str | None = None,
) -> list[Path]:
    """Writes ``array`` as one DICOM file per slice (``IM0001.dcm``, ...) into an existing, empty ``folder``.

    Integer voxels that fit int16 (or uint16) are stored as they are, with rescale slope 1 and intercept 0, so
    a CT in HU reads back identically. Other voxels (floats, wider integers) are stored as int16 with a rescale
    slope and intercept chosen from their finite range, so they read back within one slope step; infinities
    are clipped to that range, and NaN becomes 0 (or the range's nearest end).

    Args:
        array: voxels, shape (z, y, x), or (y, x) for a single slice.
        geometry: the grid of ``array``, of the same dimension.
        folder: where the files go; the caller makes it and makes the write atomic.
        metadata: tags of the source image ('gggg|eeee' -> value); patient and study tags are copied.
        modality: "ct", "mr", "us" or None, used when ``metadata`` has no Modality tag.

    Returns:
        The files written, in slice order.

    Raises:
        RuntimeError: from SimpleITK when a file cannot be written.
    """
    array, geometry = _as_3d(array, geometry)
    values, (intercept, slope), is_float = _encode(array)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    tags = _series_tags(geometry, dict(metadata or {}), modality)
    tags["0028|1052"] = _ds(intercept)
    tags["0028|1053"] = _ds(slope)
    if is_float:
        # Float voxels: GDCM stores (value - intercept) / slope, rounded, in the pixel format given here.
        tags.update({"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"})

    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # else GDCM replaces our series/instance UIDs with its own
    width = max(4, len(str(array.shape[0])))
    written = []
    for k in range(array.shape[0]):
        # A 2D slice keeps only an in-plane origin and direction: its 3D placement goes in the tags.
        slice_image = image[:, :, k]
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        slice_image.SetMetaData("0020|0032", _ds_list(image.TransformIndexToPhysicalPoint((0, 0, k))))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", new_uid())
        path = Path(folder) / f"IM{k + 1:0{width}d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_image)
        written.append(path)
    return written


def _as_3d(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """A 2D image as a one-slice volume, with a 1 mm slice along the normal of its plane."""
    if array.ndim == 3:
        return array, geometry
    d = geometry.direction
    return array[np.newaxis], Geometry(
        spacing=(*geometry.spacing, 1.0),
        origin=(*geometry.origin, 0.0),
        direction=(d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0),
    )


def _encode(array: np.ndarray) -> tuple[np.ndarray, tuple[float, float], bool]:
    """Voxels to hand to GDCM, the rescale (intercept, slope), and whether GDCM must quantise them."""
    if array.dtype.kind in "iub":
        lo, hi = int(array.min()), int(array.max())
        if _INT16.min <= lo and hi <= _INT16.max:
            return array.astype(np.int16), (0.0, 1.0), False
        if lo >= 0 and hi <= _UINT16.max:
            return array.astype(np.uint16), (0.0, 1.0), False
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
    # Map [lo, hi] onto [-32767, 32767]. DICOM decimal strings hold 16 characters, so the slope and intercept
    # are rounded to what the tags will say *before* quantising, or the error could exceed one step.
    slope = float(_ds((hi - lo) / 65534.0)) if hi > lo else 1.0
    slope = slope if slope > 0 else 1.0
    intercept = float(_ds(lo + 32767.0 * slope))
    values = np.where(finite, values, np.clip(np.nan_to_num(values, nan=0.0), lo, hi))
    stored = np.clip(np.rint((values - intercept) / slope), _INT16.min, _INT16.max)
    # Hand GDCM the already-quantised real values: its inverse rescale rounds them back to `stored` exactly.
    return stored * slope + intercept, (intercept, slope), True


def _series_tags(geometry: Geometry, metadata: dict[str, str], modality: str | None) -> dict[str, str]:
    """Tags shared by every slice of the new series."""
    tags = {tag: metadata[tag] for tag in _COPIED_TAGS if metadata.get(tag)}
    if "0008|0060" not in tags:
        tags["0008|0060"] = modality.upper() if modality else "OT"
    # Without a shared study / frame UID, GDCM would give each slice its own and the series would fall apart.
    tags.setdefault("0020|000d", new_uid())
    tags.setdefault("0020|0052", new_uid())
    tags["0020|000e"] = new_uid()
    tags["0020|0011"] = str(_series_number(metadata.get("0020|0011")))
    tags["0008|103e"] = (metadata.get("0008|103e", "") + " denoised").strip()[:64]  # LO: 64 characters
    tags["0008|0008"] = "DERIVED\\SECONDARY"
    now = time.localtime()
    for date_tag, time_tag in (("0008|0021", "0008|0031"), ("0008|0012", "0008|0013")):  # series, creation
        tags[date_tag] = time.strftime("%Y%m%d", now)
        tags[time_tag] = time.strftime("%H%M%S", now)
    d = geometry.direction
    tags["0020|0037"] = _ds_list((d[0], d[3], d[6], d[1], d[4], d[7]))  # row (x) then column (y) direction
    tags["0028|0030"] = _ds_list((geometry.spacing[1], geometry.spacing[0]))  # row spacing \ column spacing
    tags["0018|0088"] = _ds(geometry.spacing[2])
    tags.setdefault("0018|0050", _ds(geometry.spacing[2]))
    return tags


def _series_number(original: str | None) -> int:
    """The original series number + 1000, or 1000, so the derived series sorts after its source."""
    try:
        return int(float(original)) + 1000 if original else 1000
    except ValueError:
        return 1000


def _ds(value: float) -> str:
    """A DICOM decimal string (DS): as many digits as fit in its 16 characters."""
    for digits in range(16, 0, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"value cannot be written as a DICOM decimal string, got {value!r}")


def _ds_list(values) -> str:
    return "\\".join(_ds(v) for v in values)
