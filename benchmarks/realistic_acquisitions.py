"""The simulated acquisitions of the realistic-noise benchmark: which clean images, which noise physics with
which fixed parameters, and the noise power spectrum BM4D is told.

Every source is an image no shipped model was trained on. Noise is simulated by ``MedicalDenoiseLib.noise``
(see docs/noise-physics.md); the reference is ``realisation.clean``, the same acquisition without noise (an
MR acquisition that keeps 65 % of k-space is blurred: that blur is not noise, so it is in the reference too).
Parameters are in image units here: MR σ is a fraction of the data range, CT works in HU directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from _common import ensure_library_importable
from quality_volumes import VolumeSpec, load_clean, shape_text

ensure_library_importable()
from MedicalDenoiseLib.evaluation.crops import centre_crop  # noqa: E402
from MedicalDenoiseLib.evaluation.noise_power import power_spectrum  # noqa: E402
from MedicalDenoiseLib.evaluation.reference_free import foreground_mask  # noqa: E402
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer  # noqa: E402
from MedicalDenoiseLib.io.sample_data import mni152_t1_path  # noqa: E402
from MedicalDenoiseLib.noise import NoiseContext, NoiseRealisation, SliceSinograms, noise_kind  # noqa: E402

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Source:
    """A clean image and how it is cut.

    Attributes:
        key: short name (``--sources``).
        file: file name in ``--data``; None for the MNI152 template.
        modality: normalisation and the models' modality.
        crop: scored region, centred, (z, y, x) (None keeps an axis).
        bm4d_crop: BM4D's region, the centre of ``crop``; every method is scored there too.
        description: the table heading.
        whole_slice_context: CT: project the whole volume so a crop gets the noise of its full slices.
        echogenicity_smoothing: ultrasound: the middle frame, smoothed by this Gaussian SD (pixels), is the
            speckle-free echogenicity map (0: not ultrasound).
    """

    key: str
    file: str | None
    modality: str
    crop: tuple[int | None, ...]
    bm4d_crop: tuple[int, ...]
    description: str
    whole_slice_context: bool = False
    echogenicity_smoothing: float = 0.0


@dataclass(frozen=True)
class Setting:
    """One acquisition: a source, a noise kind and its fixed parameters (``sigma`` of MR: fraction of range)."""

    key: str
    source: str
    kind: str
    params: dict[str, Any]
    label: str
    figure: bool = False  # the setting whose middle slices go into the source's PNG


SOURCES = (
    Source("mni", None, "mr", (64, 96, 96), (24, 64, 64),
           "MNI152 T1 1 mm template (nilearn; averaged, nearly noise-free, smooth)"),
    Source("brain2", "mr_brain_t1gd_brain2_pyradiomics.nrrd", "mr", (None, 128, 128), (23, 64, 64),
           "MR brain T1 + Gd, pyradiomics brain2 (real, held out; its own mild noise stays in the reference; "
           "6.5 mm slices, so acquired as 2D multi-slice)"),
    Source("ct-3mm", "ct_abdomen_3mm_totalseg.nii.gz", "ct", (96, 96, 96), (24, 64, 64),
           "CT abdomen 3 mm, TotalSegmentator example (real, held out; smoothed by resampling to 3 mm, its "
           "own ~23 HU noise stays in the reference)", whole_slice_context=True),
    Source("ct-thin", "ct_abdomen_thin3sl_dcmqi.nii.gz", "ct", (3, 256, 256), (3, 128, 128),
           "CT abdomen 0.8 mm, 3 thin slices, dcmqi (real, original ~19 HU noise stays in the reference)",
           whole_slice_context=True),
    Source("us", "us_prostate_trus_phantom_plus.mha", "us", (1, 256, 256), (1, 128, 128),
           "Ultrasound: the middle frame of the TRUS phantom sequence smoothed into an echogenicity map "
           "(Gaussian 3 px), speckled anew", echogenicity_smoothing=3.0),
)

_KSPACE_3D = {"acquired": (0.8, 0.65, 0.65), "acquisition": "3d"}
_KSPACE_2D = {"acquired": (0.65, 0.65), "acquisition": "2d"}
_CT = {"kernel": "shepp-logan", "electronic_sd": 10.0}


def _mr(source: str, base: dict, coils: int, sigma: float, figure: bool = False) -> Setting:
    extent = "65 % in-plane, 80 % through-plane" if base["acquisition"] == "3d" else "65 % in-plane, 2D slices"
    return Setting(f"{source}-kspace-{coils}coil-{sigma:g}", source, "mr-kspace",
                   {**base, "coils": coils, "sigma": sigma},
                   f"k-space {extent}, {coils} coil{'s' if coils > 1 else ''}, σ {sigma:.0%}", figure)


def _ct(source: str, photons: float, figure: bool = False) -> Setting:
    return Setting(f"{source}-photons-{photons:.2g}".replace("e+0", "e"), source, "ct-projection",
                   {**_CT, "photons": photons}, f"projection noise, {photons:.2g} photons", figure)


def _us(key: str, axial: float, lateral: float, db: float, figure: bool = False) -> Setting:
    return Setting(key, "us", "us-speckle", {"axial_psf": axial, "lateral_psf": lateral, "dynamic_range_db": db,
                                            "elevational_psf": 0.0, "input_log_compressed": True},
                   f"speckle, PSF {axial:g} × {lateral:g} px, {db:g} dB", figure)


SETTINGS = (
    _mr("mni", _KSPACE_3D, 1, 0.03), _mr("mni", _KSPACE_3D, 1, 0.06, figure=True),
    _mr("mni", _KSPACE_3D, 4, 0.03), _mr("mni", _KSPACE_3D, 4, 0.06),
    _mr("brain2", _KSPACE_2D, 1, 0.03), _mr("brain2", _KSPACE_2D, 1, 0.06),
    _mr("brain2", _KSPACE_2D, 4, 0.03), _mr("brain2", _KSPACE_2D, 4, 0.06, figure=True),
    _ct("ct-3mm", 1e5), _ct("ct-3mm", 2.5e4, figure=True),
    _ct("ct-thin", 1e6), _ct("ct-thin", 2.5e5, figure=True), _ct("ct-thin", 6e4),
    _us("us-speckle-fine", 1.0, 2.0, 50.0, figure=True), _us("us-speckle-coarse", 1.5, 3.0, 60.0),
)
"""CT photons are per 1 mm detector bin and view of a 1000-view rotation (docs/noise-physics.md); at 3 mm
pixels the same photons give far less HU noise than at 0.8 mm, hence the lower counts there."""


@dataclass
class Prepared:
    """A loaded source: the clean region, what scoring needs, and what the noise model needs."""

    source: Source
    clean: np.ndarray  # float32, image units, the scored region
    spacing: tuple[float, ...]  # (z, y, x) or (y, x), mm
    data_range: float
    foreground: np.ndarray | None
    described: str
    context: NoiseContext | None = None  # CT: the whole volume's projections and the region's origin
    sinograms: Any = field(default=None, repr=False)


def _centre_origin(shape: Shape, crop: tuple[int | None, ...]) -> tuple[int, ...]:
    """Index of the first voxel of ``centre_crop(array, crop)`` (the same arithmetic, on index ranges)."""
    return tuple(int(centre_crop(np.arange(n), size or 0)[0]) for n, size in zip(shape, crop))


def prepare(source: Source, data: Path | None, crop: tuple[int | None, ...] | None = None) -> Prepared:
    """Reads and cuts one source (``crop`` overrides its region, e.g. for quick runs).

    Raises:
        FileNotFoundError: the source's file is not in ``data``.
    """
    region = crop or source.crop
    path = mni152_t1_path() if source.file is None else (data / source.file if data else None)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"`{source.file}` not found in {data}")
    whole = (None, None, None) if source.whole_slice_context else region
    spec = VolumeSpec(source.key, source.key, source.file, whole, source.modality, source.description)
    loaded = load_clean(spec, path, None, source.modality)
    spacing = tuple(float(s) for s in loaded.geometry.spacing[::-1])
    array, foreground, context, sinograms = loaded.array, loaded.foreground, None, None
    data_range = loaded.data_range
    if source.whole_slice_context:
        sinograms = SliceSinograms(array, spacing[-1]).precompute()
        context = NoiseContext(spacing=spacing, projections=sinograms, origin=_centre_origin(array.shape, region))
        array = centre_crop(array, region)
        foreground = None if foreground is None else centre_crop(foreground, region)
    if source.echogenicity_smoothing:
        array = ndimage.gaussian_filter(array[0], source.echogenicity_smoothing).astype(np.float32)
        spacing = spacing[1:]
        normalizer = IntensityNormalizer.fit(array, "us")
        foreground = foreground_mask(normalizer.normalize(array), 0.1, 2)
        data_range = normalizer.scale
    name = "nilearn MNI152 T1" if source.file is None else f"`{source.file}`"
    return Prepared(source, array, spacing, data_range,
                    foreground if foreground is not None and foreground.any() else None,
                    f"{name}, centre {shape_text(array.shape)} voxels (x×y×z)", context, sinograms)


def noise_model(setting: Setting, prepared: Prepared) -> Any:
    """The fixed-parameter model of ``setting`` in the prepared image's units."""
    params = dict(setting.params)
    if setting.kind == "mr-kspace":
        params["sigma"] = params["sigma"] * prepared.data_range
    if setting.kind == "us-speckle":
        # 8-bit B-mode frames are displayed on 0–255; a normalised image on 0–1.
        params["display_range"] = (0.0, 255.0) if float(prepared.clean.max()) > 1.5 else (0.0, 1.0)
    return noise_kind(setting.kind).fixed(**params)


def acquire(setting: Setting, prepared: Prepared, seed: int) -> NoiseRealisation:
    """One noisy acquisition of the prepared region (and its noise-free twin)."""
    return noise_model(setting, prepared).simulate(prepared.clean, np.random.default_rng(seed), prepared.context)


def estimate_psd(setting: Setting, prepared: Prepared, region: tuple[int, ...], realisations: int,
                 seed: int) -> np.ndarray:
    """The noise power spectrum on BM4D's region: mean ``|FFT|²`` of the noise (noisy − clean) of
    ``realisations`` independent acquisitions (seeds other than the scored one's)."""
    model = noise_model(setting, prepared)
    samples = []
    for index in range(realisations):
        draw = model.simulate(prepared.clean, np.random.default_rng(seed + 1000 + index), prepared.context)
        samples.append(centre_crop(draw.noise, region))
    return power_spectrum(np.stack(samples))


def bm4d_region(prepared: Prepared, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """BM4D's crop for this image's dimensionality (2D images drop the leading axis)."""
    region = override or prepared.source.bm4d_crop
    return tuple(region[-prepared.clean.ndim:])
