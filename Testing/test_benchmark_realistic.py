"""``benchmarks/realistic.py`` end to end on tiny stand-ins of the real files, and its parts' pieces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import phantom

from benchmark_support import load_script


@pytest.fixture(scope="module")
def realistic():
    return load_script("realistic")


@pytest.fixture(scope="module")
def methods():
    return load_script("realistic_methods")


@pytest.fixture(scope="module")
def acquisitions():
    return load_script("realistic_acquisitions")


@pytest.fixture(scope="module")
def reference():
    return load_script("realistic_reference")


@pytest.fixture(scope="module")
def lcd():
    return load_script("realistic_lcd")


def _write(array: np.ndarray, path: Path, spacing=None) -> Path:
    image = sitk.GetImageFromArray(array)
    if spacing:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    """Stand-ins named like three files of ../shared/data: MR brain2, the thin CT slices, a B-mode frame set."""
    folder = tmp_path / "data"
    folder.mkdir()
    _write(np.rint(phantom((8, 32, 32), low=0, high=400)).astype(np.int16),
           folder / "mr_brain_t1gd_brain2_pyradiomics.nrrd", (0.8, 0.8, 6.5))
    y, x = np.mgrid[:64, :64] - 31.5
    ct = np.where(np.hypot(y / 28, x / 24) < 1, 40.0, -1000.0) + 300 * (np.hypot(y - 5, x + 4) < 6)
    noisy_ct = ct + np.random.default_rng(0).normal(0, 15, (3, 64, 64))
    _write(np.rint(noisy_ct).astype(np.int16), folder / "ct_abdomen_thin3sl_dcmqi.nii.gz", (0.8, 0.8, 1.0))
    frames = 60 + 100 * phantom((3, 48, 64), seed=2) * np.random.default_rng(1).rayleigh(0.8, (3, 48, 64))
    _write(np.clip(frames, 0, 255).astype(np.uint8), folder / "us_prostate_trus_phantom_plus.mha")
    return folder


def test_all_three_parts_write_their_sections_tables_and_figures(realistic, data, tmp_path, tiny_model_file):
    out = tmp_path / "docs" / "bench.md"
    settings = ["brain2-kspace-4coil-0.06", "ct-thin-photons-2.5e5", "us-speckle-fine"]
    realistic.main(["--data", str(data), "--model", str(tiny_model_file), "--out", str(out),
                    "--settings", *settings, "--crop", "4", "32", "32", "--bm4d-crop", "4", "16", "16",
                    "--psd-realisations", "2", "--max-shape", "8", "32", "32", "--frames", "2",
                    "--lcd-size", "96", "--lcd-realisations", "16", "--lcd-doses", "2e4", "--resamples", "10",
                    "--skip", "bm4d", "dipy"])
    text = out.read_text(encoding="utf-8")
    for part in ("reference", "real", "lcd"):
        assert f"<!-- realistic-{part}:start -->" in text and f"<!-- realistic-{part}:end -->" in text
    lines = text.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("| setting | noise SD |")))
    columns = lines[head].strip("|").split("|")
    assert "tiny-test (blind)" in columns[4] and any("Slicer" in c for c in columns)
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines[head + 2: head + 5]}
    assert list(rows) == settings
    for cells in rows.values():
        assert len(cells) == len(columns) - 1
        psnr_in, psnr_model = float(cells[2].split("/")[0]), float(cells[3].split("/")[0])
        assert 0 < psnr_in < 60 and 0 < psnr_model < 60
    texture_rows = _texture_rows(lines)
    assert len(texture_rows) == 3  # one table per source
    for rows in texture_rows:
        assert len(rows) == len(columns) - 3  # the noisy input and every method that ran
        (hf_in, flat_in), = rows["noisy input"]
        assert hf_in > 1.0 and flat_in == 1.0  # noise adds high-frequency power; the input keeps all its error
        (hf_model, flat_model), = rows["tiny-test (blind)"]
        assert hf_model > 0 and flat_model >= 0
    for name in ("realistic_brain2-kspace-4coil-0.06.png", "realistic_real_ct_abdomen_thin3sl_dcmqi.png",
                 "realistic_real_us_prostate_trus_phantom_plus.png", "realistic_lcd.png"):
        assert (out.parent / name).stat().st_size > 100
    assert "2 frames, each as a 2D image" in text  # the frame set ran frame by frame
    assert "| volume | method | SD (HU) | NPS peak |" in text  # the CT got its noise power spectrum
    lcd_rows = [line.split("|") for line in lines if "tiny-test (blind)" in line and "[" in line]
    assert len(lcd_rows) == 1  # one per dose
    aucs = [float(cell.split("[")[0]) for row in lcd_rows for cell in row[5:9]]
    assert all(0.0 <= a <= 1.0 for a in aucs)


def _texture_rows(lines: list[str]) -> list[dict[str, list[tuple[float, ...] | str]]]:
    """Each texture table of the report: method -> per setting (high-frequency ratio, flat error left) or "–"."""
    tables = []
    for start in (i for i, line in enumerate(lines) if line.startswith("Texture: high-frequency power / clean")):
        assert lines[start + 4].startswith("| method |") and lines[start + 5].startswith("|---|")
        rows = {}
        for line in lines[start + 6:]:
            if not line.startswith("|"):
                break
            cells = line.split("|")[1:-1]
            rows[cells[0].strip()] = [tuple(float(v) for v in cell.split("/")) if "/" in cell else cell.strip()
                                      for cell in cells[1:]]
        tables.append(rows)
    return tables


def test_texture_scores_tell_noise_smoothing_and_invented_texture_apart(reference, acquisitions, methods, data):
    def blurred(noisy, told):
        return ndimage.gaussian_filter(noisy, 3.0), ""

    def smoothed(noisy, told):
        return ndimage.gaussian_filter(noisy, 1.0), ""

    def smoothed_plus_texture(noisy, told):
        grain = np.random.default_rng(3).normal(0, told.noise_sd, noisy.shape)
        return ndimage.gaussian_filter(noisy, 1.0) + grain, ""

    def bm4d_stand_in(noisy, told):
        return noisy.copy(), ""

    tried = [reference.Method(name, run) for name, run in (
        ("blurred", blurred), ("smoothed", smoothed), ("smoothed + texture", smoothed_plus_texture),
        (methods.BM4D_WHITE, bm4d_stand_in))]
    prepared = acquisitions.prepare(acquisitions.SOURCES[1], data, (4, 32, 32))
    setting = next(s for s in acquisitions.SETTINGS if s.key == "brain2-kspace-4coil-0.06")
    result = reference.run_setting(setting, prepared, tried, seed=0, psd_realisations=2, bm4d_crop=(4, 16, 16))
    assert not result.failures
    texture = {name: scores.texture for name, scores in result.scores.items()}
    hf_in, flat_in = texture["noisy input"]
    assert flat_in == pytest.approx(1.0) and hf_in > 1.0
    assert texture["blurred"][0] < 0.3 * hf_in and texture["blurred"][0] < 0.5  # fine texture gone
    assert texture["smoothed"][1] < 0.8  # less error left where the clean image is flat
    assert texture["smoothed + texture"][0] > texture["smoothed"][0]
    assert texture["smoothed + texture"][1] > texture["smoothed"][1] + 0.3  # grain added where there is none
    assert texture[methods.BM4D_WHITE] is None  # BM4D ran on its crop only: no whole-crop texture

    names = ["noisy input", *(method.name for method in tried)]
    lines = reference.source_report([result], names, None)
    rows, = _texture_rows(lines)
    assert list(rows) == names
    assert rows["noisy input"] == [pytest.approx(texture["noisy input"], abs=0.006)]
    assert rows["smoothed + texture"] == [pytest.approx(texture["smoothed + texture"], abs=0.006)]
    assert rows[methods.BM4D_WHITE] == ["–"]


def test_flat_voxels_are_the_clean_images_flattest_quarter_of_the_foreground(reference):
    clean = np.zeros((2, 16, 16))
    clean[:, :, 8:] = np.linspace(0, 1, 8)  # flat on the left, a ramp on the right
    foreground = np.zeros(clean.shape, bool)
    foreground[:, 2:14, 2:14] = True
    flat = reference.flat_voxels(clean, foreground)
    assert not flat[~foreground].any()
    assert flat[:, :, :6].sum() >= 0.25 * foreground.sum() and not flat[:, :, 8:].any()
    # Without a foreground (None or empty) every voxel is a candidate.
    assert reference.flat_voxels(clean, np.zeros(clean.shape, bool))[:, 0, 0].all()
    assert reference.flat_voxels(clean, None)[:, 0, 0].all()


def test_psd_estimate_holds_the_noise_power(acquisitions, data):
    prepared = acquisitions.prepare(acquisitions.SOURCES[1], data, (4, 32, 32))
    setting = next(s for s in acquisitions.SETTINGS if s.key == "brain2-kspace-1coil-0.06")
    psd = acquisitions.estimate_psd(setting, prepared, (4, 16, 16), 8, seed=0)
    noise = acquisitions.acquire(setting, prepared, seed=0).noise
    region = noise[:, 8:24, 8:24]
    # Parseval: the mean of |FFT|² over the bins is N × the mean square.
    assert psd.mean() / psd.size == pytest.approx(float(np.mean(region**2)), rel=0.3)
    # Zero-filling to 65 % in-plane correlates neighbours: power sits at low in-plane frequencies.
    assert psd[:, :3, :3].mean() > 2 * psd[:, 6:10, 6:10].mean()


def test_ct_crops_get_the_noise_of_their_place_in_the_whole_slices(acquisitions, data):
    prepared = acquisitions.prepare(acquisitions.SOURCES[3], data, (3, 32, 32))
    assert prepared.context.origin == (0, 16, 16)
    assert prepared.clean.shape == (3, 32, 32)
    np.testing.assert_array_equal(prepared.clean, prepared.sinograms.volume[:, 16:48, 16:48])


def test_slice_psd_is_the_mean_psd_of_the_slices(methods):
    from MedicalDenoiseLib.evaluation.noise_power import power_spectrum

    noise = np.random.default_rng(5).normal(0, 1, (6, 3, 8, 8))
    np.testing.assert_allclose(methods.slice_psd(power_spectrum(noise)), power_spectrum(noise.reshape(18, 8, 8)),
                               rtol=1e-10)


def test_bm4d_told_a_white_psd_does_what_bm4d_told_sigma_does(methods):
    # The PSD convention (N σ² in every bin for white noise) is the package's: same input, same output.
    pytest.importorskip("bm4d")
    from MedicalDenoiseLib.evaluation.baselines import bm4d_denoise

    noisy = (phantom((1, 16, 16))[0] + np.random.default_rng(6).normal(0, 0.05, (16, 16))).astype(np.float32)
    white = np.full(noisy.shape, noisy.size * 0.05**2)
    np.testing.assert_allclose(methods.bm4d_with_psd(noisy, white), bm4d_denoise(noisy, 0.05), atol=1e-4)


def test_a_stack_thinner_than_bm4d_blocks_runs_slice_by_slice_with_the_slice_psd(methods, monkeypatch):
    calls = []

    class FakeBm4d:
        @staticmethod
        def bm4d(z, psd):
            calls.append((z.shape, psd.shape, float(psd.mean())))
            return z + 1

    monkeypatch.setattr(methods, "_bm4d_module", lambda: FakeBm4d)
    noisy = np.zeros((3, 8, 8), np.float32)
    out = methods.bm4d_with_psd(noisy, np.full(noisy.shape, 192 * 4.0))
    np.testing.assert_array_equal(out, noisy + 1)
    assert calls == [((8, 8), (8, 8), 64 * 4.0)] * 3  # white σ² = 4 on 8 × 8 slices: 64 σ²
    calls.clear()
    methods.bm4d_with_psd(np.zeros((5, 8, 8), np.float32), np.ones((5, 8, 8)))
    assert calls == [((5, 8, 8), (5, 8, 8), 1.0)]


class _Identity:
    """Stands in for a Denoiser: returns the image and records the shapes it was given."""

    def __init__(self):
        self.shapes = []

    def denoise(self, volume, **_):
        from MedicalDenoiseLib.inference.denoiser import DenoiseResult

        self.shapes.append(volume.array.shape)
        return DenoiseResult(volume.with_array(volume.array.copy()), 0.0, 0.0, "ct", "cpu", 0.0)


def test_mosaic_puts_every_slice_back_in_its_place(lcd):
    images = np.random.default_rng(7).normal(0, 1, (30, 128, 128)).astype(np.float32)
    fake = _Identity()
    np.testing.assert_array_equal(lcd.mosaic_denoiser(fake, 1.0)(images), images)
    assert fake.shapes == [(640, 640), (640, 640)]  # 25 per mosaic; the second filled up with the first five


def test_phantom_inserts_have_their_contrast_at_their_centres(lcd):
    phantom_ = lcd.make_phantom(128)
    difference = phantom_.present - phantom_.absent
    for (diameter, contrast), (cy, cx) in zip(lcd.INSERTS, phantom_.centres):
        assert difference[int(round(cy)), int(round(cx))] == pytest.approx(contrast)
    assert phantom_.absent[64, 64] == 0.0 and phantom_.absent[0, 0] == -1000.0
    assert (difference > 0).sum() == pytest.approx(sum(np.pi * d * d / 4 for d, _ in lcd.INSERTS), rel=0.15)
