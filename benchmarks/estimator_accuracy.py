"""Accuracy and speed of the blind noise estimate (``estimate_noise_sigma``): estimate over true noise SD for
every simulated case of Testing/test_noise_estimation.py (2D and 3D, three seeds each), the ``make demo``
acquisition of the MNI152 T1 template, the noise map's error against a known local SD, and CPU seconds for
a 256³ volume.

The true SD is the one the tests use (the model's SD where the signal is strong for k-space MR, the RMS of
the simulation's SD map over the body for eight coils, the realised SD of noisy − clean otherwise).

Usage:
    python benchmarks/estimator_accuracy.py [--seeds 3] [--library PATH]

``--library`` imports MedicalDenoiseLib from PATH instead (the MedicalDenoise folder of another checkout),
to compare an earlier estimator on the same cases.
"""
from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parent.parent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seeds", type=int, default=3, help="noise draws per case (default 3)")
parser.add_argument("--library", type=Path, help="folder holding the MedicalDenoiseLib package to measure")
parser.add_argument("--no-timing", action="store_true", help="skip the 256³ timing")
args = parser.parse_args()
if args.library is not None:
    sys.path.insert(0, str(args.library.resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_library_importable, machine_line  # noqa: E402

ensure_library_importable()
sys.path.append(str(_REPO / "Testing"))  # the cases, phantom and true SDs of the tests
from test_noise_estimation import CASES, SHAPES, _noisy, structured_phantom  # noqa: E402

from MedicalDenoiseLib.estimation.noise_estimation import estimate_noise_sigma  # noqa: E402
from MedicalDenoiseLib.noise.image_domain import GaussianNoise, RicianNoise  # noqa: E402
from MedicalDenoiseLib.noise.mr_kspace import MRKSpaceNoise  # noqa: E402
from MedicalDenoiseLib.noise.ultrasound_speckle import UltrasoundSpeckle  # noqa: E402

# Cases the tests take on their own: (model, level, dims, note).
EXTRA = [("mr-kspace-0.5", 0.005, "3d", "test: expected miss"), ("us-sparse-0.5", 2.5, "2d", "test: expected miss"),
         ("us-sparse-0.5", 2.5, "3d", ""), ("us-sparse-0.5", 3.5, "3d", "")]


def ratios(model: str, level: float, dims: str) -> list[float]:
    out = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(zlib.crc32(f"{model} {level} {dims} {seed}".encode()))
        noisy, true_sd = _noisy(model, level, SHAPES[dims], rng)
        out.append(estimate_noise_sigma(noisy) / true_sd)
    return out


def mni_ratios() -> list[tuple[str, list[float]]]:
    """The demo's acquisition (65 % of k-space in-plane, one coil) of the template, whole or its middle slice."""
    try:
        from MedicalDenoiseLib.inference.normalization import IntensityNormalizer
        from MedicalDenoiseLib.io.reading import read_volume
        from MedicalDenoiseLib.io.sample_data import mni152_t1_path
        clean = read_volume(mni152_t1_path()).array.astype(np.float32)
    except Exception as error:  # nilearn missing: no template
        print(f"MNI152 skipped: {error}", file=sys.stderr)
        return []
    clean /= IntensityNormalizer.fit(clean, "mr").scale
    rows = []
    for dims, sigma in (("3d", 0.04), ("3d", 0.01), ("2d", 0.01), ("2d", 0.1)):
        image = clean if dims == "3d" else clean[clean.shape[0] // 2]
        out = []
        for seed in range(args.seeds):
            result = MRKSpaceNoise(sigma, acquired=(1.0, 0.65, 0.65)).simulate(image, np.random.default_rng(seed))
            out.append(estimate_noise_sigma(result.noisy) / result.params["expected_sd"])
        rows.append((f"MNI152 T1, k-space 65 %, σ {sigma:g} | {dims}", out))
    return rows


def cpu_seconds() -> list[tuple[str, float]]:
    """Least CPU seconds of three estimates of a 256³ float32 volume (after one warm-up on a slab)."""
    image, body = structured_phantom((256, 256, 256))
    rng = np.random.default_rng(0)
    volumes = {"MR magnitude (Rician 3 %, dark background)": RicianNoise(0.03)(image, rng).astype(np.float32),
               "CT-like (white 3 %, negative values)": (GaussianNoise(0.03)(np.where(body, image, 0.4), rng)
                                                        - 0.5).astype(np.float32),
               "B-mode (speckle, 1 scatterer per cell: measured twice)": UltrasoundSpeckle(
                   axial_psf=1.0, lateral_psf=2.5, scatterers_per_cell=1.0)(
                   0.15 + 0.7 * np.where(body, image, 0.4), rng)}
    out = []
    for name, volume in volumes.items():
        estimate_noise_sigma(volume[:64])
        times = []
        for _ in range(3):
            started = time.process_time()
            estimate_noise_sigma(volume)
            times.append(time.process_time() - started)
        out.append((name, min(times)))
    return out


def map_errors() -> list[tuple[str, float, float]]:
    """Median and 90th-percentile |map / local SD − 1| over the object: eight-coil MR against the simulation's
    SD map, projection CT behind a bone ring against the local SD of its noise (Gaussian window of 6 voxels)."""
    try:
        from MedicalDenoiseLib.estimation.noise_map import estimate_noise_map
    except ImportError:  # an estimator without the map
        return []
    from scipy import ndimage
    from test_noise_estimation import _ct_body
    from MedicalDenoiseLib.noise.ct_projection import CTProjectionNoise

    cases = []
    for dims in sorted(SHAPES):
        shape = SHAPES[dims]
        image, body = structured_phantom(shape)
        for level in (0.05, 0.1):
            kspace = MRKSpaceNoise(level, coils=8)
            true = np.broadcast_to(kspace.expected_sd(shape), shape)
            cases.append((f"MR, 8 coils, σ {level:g}, {dims}", kspace(image, np.random.default_rng(1)), true, body))
    hu, soft = _ct_body((160, 160))
    result = CTProjectionNoise(photons=1e4, kernel="hann", pixel_size_mm=2.0).simulate(hu, np.random.default_rng(1))
    weight = np.maximum(ndimage.gaussian_filter(soft * 1.0, 6.0), 1e-12)
    local = np.sqrt(ndimage.gaussian_filter(result.noise.astype(np.float64) ** 2 * soft, 6.0) / weight)
    cases.append(("CT projection noise, 1e4 photons, hann, 160²", result.noisy, local, soft))
    out = []
    for name, noisy, true, where in cases:
        error = np.abs(estimate_noise_map(noisy)[where] / true[where] - 1.0)
        out.append((name, float(np.median(error)), float(np.quantile(error, 0.9))))
    return out


def cell(values: list[float]) -> str:
    text = f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"
    return text + ("" if all(abs(v - 1) <= 0.15 for v in values) else " ✗")


rows = [(f"{model} {level:g} | {dims}", ratios(model, level, dims))
        for model, level in CASES for dims in sorted(SHAPES)]
rows += [(f"{model} {level:g}{f' ({note})' if note else ''} | {dims}", ratios(model, level, dims))
         for model, level, dims, note in EXTRA]
rows += mni_ratios()
print(f"{machine_line()}; {args.seeds} seeds; ✗: outside ±15 %\n")
print("| case | dims | estimate / true |\n|---|---|---|")
for label, values in rows:
    case, dims = label.split(" | ")
    print(f"| {case} | {dims} | {cell(values)} |")
errors = map_errors()
if errors:
    print("\n| noise map | median error | 90th percentile |\n|---|---|---|")
    for name, median, p90 in errors:
        print(f"| {name} | {median:.1%} | {p90:.1%} |")
if not args.no_timing:
    print("\n| 256³ volume | CPU s |\n|---|---|")
    for name, seconds in cpu_seconds():
        print(f"| {name} | {seconds:.2f} |")
