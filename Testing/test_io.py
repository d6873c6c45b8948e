"""Tests of MedicalDenoiseLib.io (reading, writing, formats): round trips keep voxels and geometry, bad files give one-line errors."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedicalDenoiseLib.io import writing as image_writing
from MedicalDenoiseLib.errors import InputError, OutputError
from MedicalDenoiseLib.io.formats import SUPPORTED_DESCRIPTION
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.io.volume import Geometry, Volume


def _rotation() -> np.ndarray:
    """A right-handed oblique rotation: 17 degrees about z, then 11 degrees about x."""
    a, b = math.radians(17), math.radians(11)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


OBLIQUE = Geometry(spacing=(0.7, 0.9, 2.5), origin=(-12.345678901234, 3.3, 101.25),
                   direction=tuple(float(v) for v in _rotation().ravel()))
AXIS_ALIGNED = Geometry(spacing=(0.7, 0.9, 2.5), origin=(-12.345678901234, 3.3, 101.25),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _int16_volume(geometry: Geometry = OBLIQUE) -> Volume:
    array = np.random.default_rng(0).integers(-32768, 32768, size=(7, 9, 11), dtype=np.int16)
    array[0, 0, 0], array[-1, -1, -1] = -32768, 32767
    return Volume(array=array, geometry=geometry)


def _float_volume(geometry: Geometry = OBLIQUE) -> Volume:
    array = (np.random.default_rng(1).normal(size=(7, 9, 11)) * 100).astype(np.float32)
    return Volume(array=array, geometry=geometry)


def _assert_geometry(got: Geometry, want: Geometry, tol: float) -> None:
    assert got.dimension == want.dimension
    if tol == 0:
        assert (got.spacing, got.origin, got.direction) == (want.spacing, want.origin, want.direction)
    else:
        for name in ("spacing", "origin", "direction"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=tol, err_msg=name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_one_line_error(info: pytest.ExceptionInfo, path: Path) -> None:
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message, message


# --- round trips ---------------------------------------------------------------------------------------------

# NRRD stores spacing x direction products, so spacing and direction come back within an ulp or two of an
# oblique grid (origin exactly); NIfTI stores geometry in float32; MetaImage keeps every double.
TOLERANCE = {".nrrd": 1e-12, ".nhdr": 1e-12, ".nii.gz": 1e-6, ".mha": 0.0, ".mhd": 0.0}


@pytest.mark.parametrize("ext", list(TOLERANCE))
@pytest.mark.parametrize("make", [_int16_volume, _float_volume], ids=["int16", "float32"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, ext, make):
    volume = make()
    path = tmp_path / f"volume{ext}"
    write_volume(volume, path)
    back = read_volume(path)
    assert back.array.dtype == volume.array.dtype
    assert back.shape == (7, 9, 11)
    np.testing.assert_array_equal(back.array, volume.array)
    _assert_geometry(back.geometry, volume.geometry, TOLERANCE[ext])
    if ext != ".nii.gz":
        assert back.geometry.origin == volume.geometry.origin
    assert back.modality is None and back.source == str(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_nrrd_keeps_axis_aligned_geometry_exactly(tmp_path):
    volume = _int16_volume(AXIS_ALIGNED)
    write_volume(volume, tmp_path / "a.nrrd")
    _assert_geometry(read_volume(tmp_path / "a.nrrd").geometry, AXIS_ALIGNED, 0.0)


def test_float_onto_int16_reference_rounds_half_to_even_and_clips(tmp_path):
    values = np.array([40000.7, -40000.0, -1.5, 2.5, 0.5, -0.5, 1.5, np.nan], dtype=np.float32)
    reference = _int16_volume(AXIS_ALIGNED)
    reference = Volume(array=reference.array[:1, :2, :4], geometry=AXIS_ALIGNED)
    result = reference.with_array(values.reshape(1, 2, 4))
    write_volume(result, tmp_path / "out.nrrd", reference=reference)
    back = read_volume(tmp_path / "out.nrrd")
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array.ravel(), [32767, -32768, -2, 2, 0, 0, 2, 0])


def test_overwrites_an_existing_output(tmp_path):
    path = tmp_path / "out.mha"
    write_volume(_float_volume(), path)
    write_volume(_int16_volume(), path)
    assert read_volume(path).array.dtype == np.int16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mha"]


def test_png_uint8_round_trip(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, size=(9, 11), dtype=np.uint8)
    volume = Volume(array=array, geometry=Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)))
    write_volume(volume, tmp_path / "slice.png")
    back = read_volume(tmp_path / "slice.png")
    assert back.array.dtype == np.uint8 and back.shape == (9, 11)
    np.testing.assert_array_equal(back.array, array)
    _assert_geometry(back.geometry, volume.geometry, 0.0)


def test_png_float_needs_a_uint_reference(tmp_path):
    geometry = Geometry((1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    reference = Volume(array=np.zeros((3, 5), np.uint8), geometry=geometry)
    result = reference.with_array(np.full((3, 5), 300.2, np.float32))
    with pytest.raises(OutputError, match="uint8/uint16") as info:
        write_volume(result, tmp_path / "x.png")
    _assert_one_line_error(info, tmp_path / "x.png")
    write_volume(result, tmp_path / "x.png", reference=reference)
    np.testing.assert_array_equal(read_volume(tmp_path / "x.png").array, 255)


def test_png_refuses_a_geometry_it_cannot_store(tmp_path):
    volume = Volume(array=np.zeros((3, 5), np.uint8), geometry=Geometry((1.0, 1.0), (4.0, 2.0), (1, 0, 0, 1)))
    with pytest.raises(OutputError, match="origin"):
        write_volume(volume, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_one_slice_volume(tmp_path):
    geometry = Geometry((0.5, 0.5, 3.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    array = np.random.default_rng(3).integers(0, 65536, size=(1, 9, 11), dtype=np.uint16)
    volume = Volume(array=array, geometry=geometry)
    write_volume(volume, tmp_path / "one.nrrd")
    back = read_volume(tmp_path / "one.nrrd")
    assert back.shape == (1, 9, 11)
    np.testing.assert_array_equal(back.array, array)
    write_volume(volume, tmp_path / "one.png")  # a 2D format gets the slice as 2D
    back = read_volume(tmp_path / "one.png")
    assert back.shape == (9, 11) and back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, array[0])


# --- DICOM ---------------------------------------------------------------------------------------------------

SCAN_TAGS = {"0010|0010": "Doe^Jane", "0010|0020": "MD-0042", "0020|000d": "1.2.826.0.1.3680043.8.498.1",
             "0008|0060": "CT", "0020|0011": "3", "0008|103e": "Abdomen", "0008|1030": "CT abdomen"}
SCAN_SERIES_UID = "1.2.826.0.1.3680043.8.498.1.2"


def _write_scanner_series(folder: Path, array: np.ndarray, geometry: Geometry, series_uid: str) -> None:
    """A series as a scanner would write it, through SimpleITK alone: HU stored with intercept -1024."""
    folder.mkdir(exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    d = geometry.direction
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        s = image[:, :, k]
        for tag, value in {**SCAN_TAGS, "0020|000e": series_uid, "0028|1052": "-1024", "0028|1053": "1",
                           "0020|0037": "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                           "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint(
                               (0, 0, k))),
                           "0020|0013": str(k + 1), "0008|0018": f"{series_uid}.{k + 1}"}.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-1]}-{k:03d}.dcm"))
        writer.Execute(s)


@pytest.fixture
def scan(tmp_path):
    """A fake CT series (5 slices, oblique, anisotropic) and its voxels in HU."""
    array = np.random.default_rng(4).integers(-1024, 3000, size=(5, 9, 7), dtype=np.int16)
    folder = tmp_path / "scan"
    _write_scanner_series(folder, array, OBLIQUE, SCAN_SERIES_UID)
    return folder, array


def test_reads_a_scanner_dicom_series(scan):
    folder, array = scan
    volume = read_volume(folder)
    assert volume.array.dtype == np.int16  # SimpleITK widens rescaled CT to int32; whole HU fit int16
    np.testing.assert_array_equal(volume.array, array)
    _assert_geometry(volume.geometry, OBLIQUE, 1e-4)
    assert volume.modality == "ct"
    assert volume.metadata["0010|0010"] == "Doe^Jane" and volume.metadata["0020|000e"] == SCAN_SERIES_UID
    assert volume.source == str(folder)
    # One file of the series stands for the series.
    np.testing.assert_array_equal(read_volume(sorted(folder.iterdir())[2]).array, array)


def test_dicom_folder_with_several_series_gives_the_largest(scan):
    folder, array = scan
    small = np.zeros((2, 9, 7), np.int16)
    _write_scanner_series(folder, small, AXIS_ALIGNED, "1.2.826.0.1.3680043.8.498.1.9")
    np.testing.assert_array_equal(read_volume(folder).array, array)


def test_dicom_series_written_and_read_back(scan, tmp_path):
    folder, array = scan
    original = read_volume(folder)
    result = original.with_array(original.array.astype(np.float32) + 0.4)
    out = tmp_path / "denoised"
    write_volume(result, out, reference=original)
    assert sorted(p.name for p in out.iterdir()) == [f"IM{k:04d}.dcm" for k in range(1, 6)]
    back = read_volume(out)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, array)  # + 0.4 rounds away
    _assert_geometry(back.geometry, original.geometry, 1e-4)
    assert back.modality == "ct"
    tags = back.metadata
    assert tags["0020|000e"] != SCAN_SERIES_UID and len(tags["0020|000e"]) <= 64
    assert (tags["0010|0010"], tags["0010|0020"], tags["0020|000d"]) == ("Doe^Jane", "MD-0042",
                                                                          SCAN_TAGS["0020|000d"])
    assert tags["0020|0011"] == "1003" and tags["0008|103e"] == "Abdomen denoised"
    assert tags["0008|0008"].startswith("DERIVED")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dicom_keeps_int16_extremes_and_accepts_a_trailing_slash(tmp_path):
    volume = _int16_volume()
    write_volume(volume, f"{tmp_path / 'series'}/")
    back = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(back.array, volume.array)
    _assert_geometry(back.geometry, volume.geometry, 1e-4)
    assert back.modality is None  # no modality known: written as "OT"


def test_dicom_uint16_into_an_existing_empty_folder_and_a_file_without_extension(tmp_path):
    array = np.random.default_rng(6).integers(0, 65536, size=(3, 4, 5)).astype(np.uint16)
    (tmp_path / "series").mkdir()
    write_volume(Volume(array=array, geometry=OBLIQUE), tmp_path / "series")
    back = read_volume(tmp_path / "series")
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, array)
    # DICOM files often have no extension: recognised by their 'DICM' preamble.
    (tmp_path / "IMG0001").write_bytes((tmp_path / "series" / "IM0002.dcm").read_bytes())
    np.testing.assert_array_equal(read_volume(tmp_path / "IMG0001").array, array[1:2])


def test_dicom_float_without_reference_round_trips_within_one_step(tmp_path):
    volume = _float_volume()
    write_volume(volume, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    step = float(np.ptp(volume.array)) / 65534
    assert np.abs(back.array - volume.array).max() <= 0.5 * step * 1.001


def test_dicom_refuses_a_non_empty_folder(scan):
    folder, _ = scan
    before = sorted(folder.iterdir())
    with pytest.raises(OutputError, match="not empty"):
        write_volume(_int16_volume(), folder)
    assert sorted(folder.iterdir()) == before


def test_dicom_write_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    def fail_after_one_file(array, geometry, folder, **kwargs):
        (folder / "IM0001.dcm").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(image_writing, "write_dicom_series", fail_after_one_file)
    with pytest.raises(OutputError, match="disk full"):
        write_volume(_int16_volume(), tmp_path / "series")
    assert list(tmp_path.iterdir()) == []


# --- bad inputs and outputs ----------------------------------------------------------------------------------

def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nothing.nrrd"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    return tmp_path / "empty.nii.gz"


def _corrupt(tmp_path: Path) -> Path:
    (tmp_path / "corrupt.nrrd").write_bytes(np.random.default_rng(5).bytes(300))
    return tmp_path / "corrupt.nrrd"


def _four_d(tmp_path: Path) -> Path:
    sitk.WriteImage(sitk.JoinSeries([sitk.Image([4, 3, 2], sitk.sitkFloat32)] * 2), str(tmp_path / "4d.nrrd"))
    return tmp_path / "4d.nrrd"


def _rgb(tmp_path: Path) -> Path:
    rgb = sitk.GetImageFromArray(np.zeros((5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.png"))
    return tmp_path / "rgb.png"


def _complex(tmp_path: Path) -> Path:
    sitk.WriteImage(sitk.Image([3, 3], sitk.sitkComplexFloat32), str(tmp_path / "complex.nrrd"))
    return tmp_path / "complex.nrrd"


def _unsupported(tmp_path: Path) -> Path:
    (tmp_path / "image.xyz").write_bytes(b"not an image")
    return tmp_path / "image.xyz"


def _folder_without_dicom(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("no images here")
    return tmp_path / "folder"


@pytest.mark.parametrize("make, expected", [
    (_missing, "no such file or folder"), (_empty, "empty file"), (_corrupt, "cannot be read as an image"),
    (_four_d, "4D images are not supported (size 4x3x2x2)"), (_rgb, "3 components per pixel"),
    (_complex, "complex pixels"), (_unsupported, "unsupported file type '.xyz'"),
    (_folder_without_dicom, "no DICOM series"),
])
def test_bad_input_gives_a_one_line_input_error(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        read_volume(path)
    _assert_one_line_error(info, path)
    assert expected in str(info.value)
    if make not in (_missing, _folder_without_dicom):
        assert SUPPORTED_DESCRIPTION in str(info.value)


def test_4d_with_one_time_point_is_read_as_3d(tmp_path):
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))])
    sitk.WriteImage(image, str(tmp_path / "t1.nrrd"))
    assert read_volume(tmp_path / "t1.nrrd").shape == (2, 3, 4)


def test_reading_never_changes_the_input(tmp_path):
    path = tmp_path / "in.nrrd"
    write_volume(_int16_volume(), path)
    before = _sha256(path)
    volume = read_volume(path)
    write_volume(volume.with_array(volume.array.astype(np.float32) * 0.5), tmp_path / "out.nrrd", reference=volume)
    assert _sha256(path) == before


def test_missing_output_folder_gives_output_error_and_leaves_nothing(tmp_path):
    path = tmp_path / "no" / "such" / "out.nrrd"
    with pytest.raises(OutputError, match="does not exist") as info:
        write_volume(_int16_volume(), path)
    _assert_one_line_error(info, path)
    assert list(tmp_path.iterdir()) == []


def test_unsupported_output_extension(tmp_path):
    with pytest.raises(OutputError, match="unsupported output type '.jpgx'"):
        write_volume(_int16_volume(), tmp_path / "out.jpgx")


def test_failed_write_is_atomic(tmp_path):
    (tmp_path / "keep.txt").write_text("unrelated")
    target = tmp_path / "out.png"
    volume = Volume(array=np.zeros((3, 5, 7), np.uint8), geometry=AXIS_ALIGNED)
    with pytest.raises(OutputError, match="3 slices") as info:
        write_volume(volume, target)
    _assert_one_line_error(info, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
