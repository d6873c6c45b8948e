"""Which files and folders the library reads: extensions, DICOM detection, and the sentence that says so."""
from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

__all__ = ["SUPPORTED_DESCRIPTION", "IMAGE_EXTENSIONS", "DICOM_EXTENSIONS", "file_extension", "is_image_file",
           "is_dicom_file", "is_dicom_folder", "dicom_series_ids", "has_dicom_preamble"]

SUPPORTED_DESCRIPTION = (
    "scalar 2D/3D images in .nrrd/.nhdr, .nii/.nii.gz, .mha/.mhd, .png, .tif/.tiff, "
    "or a DICOM series folder (or one of its files)"
)

# Longest first, so that ".nii.gz" wins over ".gz".
IMAGE_EXTENSIONS = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd", ".png", ".tiff", ".tif")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file whose name or content says it is a readable image (a DICOM file included)."""
    p = Path(path)
    return p.is_file() and (file_extension(p) in IMAGE_EXTENSIONS + DICOM_EXTENSIONS or has_dicom_preamble(p))


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a file named like DICOM or that says 'DICM' after its preamble."""
    p = Path(path)
    return p.is_file() and (file_extension(p) in DICOM_EXTENSIONS or has_dicom_preamble(p))


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """True for a folder that directly holds at least one DICOM series."""
    return Path(path).is_dir() and bool(dicom_series_ids(Path(path)))


def dicom_series_ids(folder: Path) -> tuple[str, ...]:
    """The DICOM series UIDs directly in ``folder`` (empty when there are none)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's "No Series were found" is ours to say, once
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return ()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def file_extension(path: Path) -> str:
    """The lower-case extension, ``.nii.gz`` as one."""
    name = path.name.lower()
    for ext in IMAGE_EXTENSIONS + DICOM_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def has_dicom_preamble(path: Path) -> bool:
    """DICOM files often have no extension; they say 'DICM' after a 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False
