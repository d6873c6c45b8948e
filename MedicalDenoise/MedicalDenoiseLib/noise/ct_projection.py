"""Reduced-dose CT by projection-domain noise insertion (Yu et al., Med. Phys. 39(5):2012, "Development and
validation of a practical lower-dose-simulation tool").

For each axial slice of a full-dose image: attenuation from HU, line integrals ``p`` (parallel beam), photon
counts ``Poisson(I0·exp(−p)) + Normal(0, σ_e)`` clipped to ≥ 1, log, and filtered back projection of the
difference ``log(I0·exp(−p)) − log(counts)`` with the chosen kernel. That difference reconstruction is the
low-dose reconstruction minus the noiseless full-dose one of the same geometry, so the discretisation error
of projector and back-projector cancels and only noise is added to the original image. Noise then has the
FBP texture (noise power ∝ |f|·window², streaks) and grows by itself behind wide or dense anatomy, where
fewer photons arrive.

Cost: only the rays through the image are drawn, on a detector grid centred on it, and a patch's
back-projection matrix is kept between draws; with :class:`~MedicalDenoiseLib.noise.ct_sinograms.SliceSinograms`
precomputed for the volume a draw is sampling, noise and FBP only (see docs/noise-physics.md for timings).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .ct_sinograms import MU_WATER_PER_MM, SliceSinograms
from .parallel_beam import KERNELS, auto_views, backproject, detector_bins, filter_projections
from .parameter_ranges import Choice, LogUniform, Sometimes, Uniform
from .realisation import NoiseContext, NoiseRealisation

__all__ = ["CTProjectionNoise", "CT_PROJECTION_RANGES"]

_REFERENCE_VIEWS = 1000  # ``photons`` is quoted per view of a 1000-view rotation and per 1 mm detector bin
_POISSON_BELOW = 50.0  # expected counts below which Poisson is drawn exactly; above it Normal(λ, λ) is as good


@dataclass(frozen=True)
class CTProjectionNoise:
    """Projection-domain CT noise at a reduced dose, added to a full-dose image.

    Attributes:
        photons: incident photons per detector bin per view, quoted for a 1 mm bin and a 1000-view rotation
            (clinical full dose is ~1e5–1e6; lower means noisier). Internally scaled to the simulated bin
            width (one pixel) and view count, so the image noise does not depend on those choices.
        electronic_sd: SD of the detector's electronic noise in counts, at the same reference (~5–20).
        kernel: reconstruction kernel, sharp to soft: ramp, shepp-logan, cosine, hamming, hann.
        slice_average: thick-slice reformat: each slice's noise is the mean of this many consecutive thin-slice
            realisations (a sliding window), so its SD falls by √n and neighbouring slices correlate at
            ``(n − k)/n`` for lag ``k``. 1 gives independent slices.
        pixel_size_mm: in-plane pixel size when neither the context's spacing nor precomputed projections
            give it.
        views: projection angles over 180° (None: ``π/2 ×`` the image's larger side, 64–768).
        mu_water: attenuation of water in 1/mm (0.0195 at ~70 keV).
        hu_offset, hu_per_unit: ``HU = hu_offset + hu_per_unit · value``; (0, 1) for images in HU,
            (−1000, 2000) for the library's normalised CT.
        padding_below_hu: voxels below this are outside the field of view (−3024, −32768 …): they attenuate
            nothing and are returned unchanged.
    """

    photons: float = 2e5
    electronic_sd: float = 10.0
    kernel: str = "shepp-logan"
    slice_average: int = 1
    pixel_size_mm: float = 0.8
    views: int | None = None
    mu_water: float = MU_WATER_PER_MM
    hu_offset: float = 0.0
    hu_per_unit: float = 1.0
    padding_below_hu: float = -1500.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.photons) and self.photons > 0):
            raise ValueError(f"photons must be a finite number > 0, got {self.photons}")
        if not (math.isfinite(self.electronic_sd) and self.electronic_sd >= 0):
            raise ValueError(f"electronic_sd must be a finite number >= 0, got {self.electronic_sd}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if int(self.slice_average) != self.slice_average or self.slice_average < 1:
            raise ValueError(f"slice_average must be an integer >= 1, got {self.slice_average}")
        if not self.pixel_size_mm > 0:
            raise ValueError(f"pixel_size_mm must be > 0, got {self.pixel_size_mm}")
        if self.views is not None and self.views < 2:
            raise ValueError(f"views must be >= 2 or None, got {self.views}")
        if self.hu_per_unit == 0:
            raise ValueError(f"hu_per_unit must not be 0, got {self.hu_per_unit}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The image with reduced-dose noise (float32); the image is its own field of view."""
        return self.simulate(image, rng).noisy

    def simulate(self, image: np.ndarray, rng: np.random.Generator,
                 context: NoiseContext | None = None) -> NoiseRealisation:
        """Adds projection-domain noise to a full-dose image.

        Args:
            image: ``(D, H, W)`` volume or ``(H, W)`` slice (axial slices along axis 0), in the units set by
                ``hu_offset``/``hu_per_unit``.
            rng: the random generator.
            context: ``projections`` (:class:`SliceSinograms` of the whole volume) and ``origin`` (the image's
                first voxel in it) make the noise follow the full slices' attenuation; ``spacing`` gives the
                pixel size. Without projections the image is projected on its own: right for whole slices,
                too little attenuation (so too little noise) for a small patch.

        Returns:
            The realisation; ``clean`` is the input and ``sigma`` is the SD inside the field of view.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim not in (2, 3) or min(image.shape) < 1:
            raise ValueError(f"image must be 2D (H, W) or 3D (D, H, W), got shape {image.shape}")
        volume = image if image.ndim == 3 else image[None]
        context = context or NoiseContext()
        projections, origin = context.projections, tuple(context.origin)[-3:]
        if projections is None:
            pixel = float(context.spacing[-1]) if context.spacing is not None else self.pixel_size_mm
            projections = SliceSinograms(volume, pixel, mu_water=self.mu_water, hu_offset=self.hu_offset,
                                         hu_per_unit=self.hu_per_unit, padding_below_hu=self.padding_below_hu)
            origin = (0, 0, 0)
        noise_hu = self._noise_hu(projections, origin, volume.shape, rng)
        hu = self.hu_offset + self.hu_per_unit * volume
        noise = (noise_hu / np.float32(self.hu_per_unit)).astype(np.float32)
        inside = hu >= self.padding_below_hu
        noise[~inside] = 0.0  # outside the field of view: returned exactly as given
        noisy = (volume + noise).reshape(image.shape)
        sigma = float(noise[inside].std()) if inside.any() else 0.0
        params = {**asdict(self), "pixel_size_mm": projections.pixel_size_mm}
        return NoiseRealisation(noisy, image.copy(), sigma, params)

    def _noise_hu(self, projections: SliceSinograms, origin: tuple[int, ...], shape: tuple[int, int, int],
                  rng: np.random.Generator) -> np.ndarray:
        """``(D, H, W)`` noise in HU for the region at ``origin`` of the projected volume."""
        depth, height, width = shape
        if len(origin) != 3 or any(o < 0 for o in origin) or any(
                o + n > m for o, n, m in zip(origin, shape, projections.shape)):
            raise ValueError(f"origin {origin} with image shape {shape} must lie inside the projected volume "
                             f"of shape {projections.shape}")
        views = int(self.views or auto_views((height, width)))
        bins = detector_bins((height, width))
        theta = np.pi * np.arange(views) / views
        # Detector grid centred on the region: t of the region's centre plus whole bins either side.
        centre_y, centre_x = origin[1] + (height - 1) / 2, origin[2] + (width - 1) / 2
        centre = projections.centre
        t_centre = (centre_x - centre[1]) * np.cos(theta) - (centre_y - centre[0]) * np.sin(theta)
        t = t_centre[:, None] + (np.arange(bins) - bins // 2)[None]
        n = int(self.slice_average)
        thin = np.clip(origin[0] + np.arange(depth + n - 1) - (n - 1) // 2, 0, projections.shape[0] - 1)
        line_integrals = projections.sample(thin, theta, t)
        log_noise = self._log_count_noise(line_integrals, projections.pixel_size_mm, views, rng)
        noise = backproject(filter_projections(log_noise, self.kernel), (height, width))
        if n > 1:  # thick slices: sliding mean of n thin-slice noise images
            cumulative = np.concatenate([np.zeros((1, height, width), np.float32), np.cumsum(noise, axis=0)])
            noise = (cumulative[n:] - cumulative[:-n]) / np.float32(n)
        # Attenuation per pixel → HU: μ = μ_w (1 + HU/1000).
        return noise * np.float32(1000.0 / (self.mu_water * projections.pixel_size_mm))

    def _log_count_noise(self, line_integrals: np.ndarray, pixel_size_mm: float, views: int,
                         rng: np.random.Generator) -> np.ndarray:
        """``log(λ) − log(counts)`` per ray: the low-dose minus the noiseless log projection (float32).

        Photons and electronic variance scale with the bin width and with the views merged into one
        simulated view, which keeps the image noise independent of both.
        """
        scale = pixel_size_mm * _REFERENCE_VIEWS / views
        expected = np.exp(-line_integrals, dtype=np.float32)
        expected *= np.float32(self.photons * scale)
        electronic_variance = np.float32(self.electronic_sd**2 * scale)
        # counts = λ (1 + x) with x ~ Normal(0, (λ + σ_e²)/λ²), so log λ − log counts = −log1p(x).
        x = rng.standard_normal(expected.shape, dtype=np.float32)
        x *= np.sqrt(expected + electronic_variance) / expected
        few = expected < _POISSON_BELOW
        if few.any():  # photon starvation: exact Poisson, where the log's bias makes the streaks
            lam = expected[few]
            electronic = np.sqrt(electronic_variance) * rng.standard_normal(lam.size, dtype=np.float32)
            counts = rng.poisson(lam) + electronic
            x[few] = counts / lam - 1.0
        np.maximum(x, 1.0 / expected - 1.0, out=x)  # counts are clipped to ≥ 1 before the log
        return -np.log1p(x)


CT_PROJECTION_RANGES = {
    "photons": LogUniform(5e4, 5e6),
    "electronic_sd": Uniform(0.0, 20.0),
    "kernel": Choice(KERNELS),
    "slice_average": Sometimes(0.25, Choice((2, 3, 4)), 1),
}
"""Training ranges. On a 0.8 mm abdominal slice (Shepp-Logan kernel) 5e4–5e6 photons add ~125 to ~10 HU in
soft tissue, on top of the ~20 HU the full-dose image has."""
