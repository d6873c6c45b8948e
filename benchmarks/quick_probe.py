"""A quick look at models on realistic noise, in minutes: the MNI152 T1 template (never trained on) acquired
in k-space at two settings and with white noise (PSNR against the noise-free acquisition), and three real
scans no shipped model trained on (flat-region noise left and strong-edge sharpness kept), beside Slicer's
anisotropic diffusion (conductance 1, 5 iterations). The full benchmark is benchmarks/realistic.py.

Usage:
    python benchmarks/quick_probe.py autoencoder-v2 autoencoder-v3 [--data ../shared/data]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import default_data_dir, ensure_library_importable

ensure_library_importable()
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer
from MedicalDenoiseLib.evaluation.metrics import psnr
from MedicalDenoiseLib.evaluation.reference_free import flat_region_mask, flat_region_noise_sd, foreground_mask, strong_edge_mask, edge_sharpness
from MedicalDenoiseLib.evaluation.crops import centre_crop
from MedicalDenoiseLib.evaluation.baselines import curvature_anisotropic_diffusion
from MedicalDenoiseLib.noise.kinds import noise_kind
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("models", nargs="+", help="registry names or .safetensors files")
parser.add_argument("--data", default=default_data_dir(), help="the folder of real volumes (default ../shared/data)")
args = parser.parse_args()
D = f"{args.data}/"
torch.set_num_threads(1)
dens = {m: Denoiser(m, device="cpu") for m in args.models}
def run_all(noisy, geom, modality, clean, rng_range):
    row = {"input": psnr(clean, noisy, rng_range)}
    for m, d in dens.items():
        out = d.denoise(Volume(noisy, geom), modality=modality).volume.array
        row[m] = psnr(clean, out, rng_range)
    out = curvature_anisotropic_diffusion(noisy, 1.0, 5)
    row["slicer-diffusion"] = psnr(clean, out, rng_range)
    return row
rng = np.random.default_rng(0)
from MedicalDenoiseLib.io.sample_data import mni152_t1_path
v = read_volume(mni152_t1_path())
arr = centre_crop(v.array.astype(np.float32), (48, 128, 128))
norm = IntensityNormalizer.fit(arr, "mr"); x = norm.normalize(arr)
for label, params in [("mr-kspace 65%/1coil 3%", dict(sigma=0.03, acquired=(1.0, 0.65, 0.65), acquisition="3d")),
                      ("mr-kspace 50%/4coil 5%", dict(sigma=0.05, acquired=(1.0, 0.5, 0.5), coils=4, acquisition="3d"))]:
    r = noise_kind("mr-kspace").fixed(**params).simulate(x, np.random.default_rng(1))
    print(label, {k: round(val, 2) for k, val in run_all(r.noisy, v.geometry, "mr", r.clean, 1.0).items()}, flush=True)
from MedicalDenoiseLib.noise.realisation import realise
r = realise(noise_kind("gaussian").fixed(sigma=0.05), x, np.random.default_rng(2))
print("gaussian 5%", {k: round(val, 2) for k, val in run_all(r.noisy, v.geometry, "mr", r.clean, 1.0).items()}, flush=True)
# real phantoms / frames: flat noise left
for f, mod in [("mr_phantom_t1mprage_xa30i.nii.gz", "mr"), ("us_curvilinear_bk_plus.mha", "us"), ("mr_chest_tfl3d_seg3d.nii.gz", "mr")]:
    rv = read_volume(D + f); a = rv.array.astype(np.float32)
    if a.ndim == 3 and a.shape[0] > 40: a = centre_crop(a, (24, None, None))
    if a.ndim == 3 and f.startswith("mr_chest"): a = centre_crop(a, (8, 320, 320))
    n = IntensityNormalizer.fit(a, mod); fg = foreground_mask(n.normalize(a))
    flat = flat_region_mask(a, fg); edges = strong_edge_mask(a, fg)
    base = flat_region_noise_sd(a, flat); e0 = edge_sharpness(a, edges)
    row = {}
    geom = rv.geometry if a.ndim == rv.array.ndim and a.shape == rv.array.shape else None
    from MedicalDenoiseLib.io.volume import Geometry
    g = Geometry((1.0,)*a.ndim, (0.0,)*a.ndim, tuple(np.eye(a.ndim).ravel()))
    for m, d in dens.items():
        out = d.denoise(Volume(a, g), modality=mod).volume.array
        row[m] = (round(flat_region_noise_sd(out, flat) / base, 2), round(edge_sharpness(out, edges) / e0, 2))
    out = curvature_anisotropic_diffusion(a, 1.0, 5)
    row["slicer-diffusion"] = (round(flat_region_noise_sd(out, flat) / base, 2), round(edge_sharpness(out, edges) / e0, 2))
    print(f, "noise left / edges kept", row, flush=True)
