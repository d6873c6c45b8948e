"""The simplest way to train a denoiser: clean volumes, synthetic noise, one process on the CPU.

Every step draws foreground-biased patches from one volume, adds a noise model at a random level, and
trains the network to remove it. The loss is weighted by the inverse noise variance so that low noise
levels, whose errors are small, count as much as high ones. The network is told the noise level as the
blind estimator measures it, exactly as at inference.

    python -m training.simple_synthetic --data DIR --out runs/NAME --max-steps 2500 \
        --export MedicalDenoise/Resources/Models/NAME.safetensors

Interrupt at any time; ``--resume`` continues from the last checkpoint in ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MedicalDenoiseLib.models.model_files import ModelCard, save_model
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.inference.noise_estimation import estimate_noise_sigma
from MedicalDenoiseLib.noise.image_domain import GaussianNoise, RandomNoise
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer, guess_modality
from training.synthetic_phantoms import random_phantom

NOISE_BY_MODALITY = {"ct": ("gaussian", "ct"), "mr": ("gaussian", "rician"), "us": ("gaussian", "speckle")}
# White noise only: the blind estimate then measures the very noise the network removes, which makes the
# noise-level input unambiguous. The first shipped model is trained this way; the full pipeline in
# training/train.py adds correlated CT noise and speckle.
WHITE_NOISE_BY_MODALITY = {"ct": ("gaussian",), "mr": ("gaussian", "rician"), "us": ("gaussian", "rician")}
SIGMA_RANGE = (0.005, 0.15)
# Real "clean" volumes carry their own noise (about 1-2 % of the range). Weighting samples by 1/sigma^2
# alone would let the lowest levels, where that noise is all the network sees, dominate the loss; the floor
# balances low and high levels without chasing the targets' own noise.
WEIGHT_SIGMA_FLOOR = 0.02
WARMUP_STEPS = 100


def load_training_volumes(folder: Path, exclude: set[str]) -> list[dict]:
    volumes = []
    for path in sorted(folder.iterdir()):
        if path.name in exclude or not path.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
            continue
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        modality = "us" if path.name.startswith("us_") else guess_modality(array)
        norm = IntensityNormalizer.fit(array, modality)
        image = norm.normalize(array)
        foreground = np.argwhere(image[:, ::4, ::4] > 0.05) * np.array([1, 4, 4])
        volumes.append({"name": path.name, "image": image, "modality": modality, "foreground": foreground})
        print(f"  {path.name}: {array.shape} {modality}, {len(foreground)} foreground samples", flush=True)
    return volumes


def patch_shape_for(shape: tuple[int, ...], voxels: int = 48**3, edge: int = 48) -> tuple[int, int, int]:
    """``edge``³ where the volume allows it; thick-slice volumes get flatter, wider patches of similar size."""
    depth = min(edge, shape[0] // 4 * 4)
    side = int(math.sqrt(voxels / depth)) // 4 * 4
    return depth, min(side, shape[1] // 4 * 4), min(side, shape[2] // 4 * 4)


def sample_batch(volume: dict, batch: int, rng: np.random.Generator, patch: int = 48) -> np.ndarray:
    image = volume["image"]
    size = patch_shape_for(image.shape, patch**3, patch)
    patches = []
    for _ in range(batch):
        centre = volume["foreground"][rng.integers(len(volume["foreground"]))]
        start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, image.shape)]
        patch = image[tuple(slice(b, b + s) for b, s in zip(start, size))]
        for axis in range(3):
            if rng.random() < 0.5:
                patch = np.flip(patch, axis)
        if rng.random() < 0.5:
            patch = patch.transpose(0, 2, 1)
        patches.append(np.ascontiguousarray(patch))
    if any(p.shape != patches[0].shape for p in patches):
        patches = [p[:, : min(q.shape[1] for q in patches), : min(q.shape[2] for q in patches)] for p in patches]
    return np.stack(patches)


def make_inputs(clean: np.ndarray, noise: RandomNoise, rng: np.random.Generator):
    """Network input (noisy patch + the estimated noise level as a channel), target, and the drawn levels."""
    noisy, estimated, drawn = [], [], []
    for patch in clean:
        noisy_patch, sigma = noise(patch, rng)
        noisy.append(noisy_patch)
        estimated.append(estimate_noise_sigma(noisy_patch))
        drawn.append(sigma)
    noisy = np.stack(noisy)
    level_maps = np.broadcast_to(np.array(estimated, np.float32)[:, None, None, None], noisy.shape)
    x = torch.from_numpy(np.stack([noisy, level_maps], axis=1).astype(np.float32))
    return x, torch.from_numpy(clean[:, None].copy()), torch.tensor(drawn)


def validation_psnr(network, clean: np.ndarray, sigma: float, seed: int = 0) -> float:
    noisy = GaussianNoise(sigma)(clean, np.random.default_rng(seed))
    level = estimate_noise_sigma(noisy)
    x = torch.from_numpy(np.stack([noisy, np.full_like(noisy, level)])[None])
    network.eval()
    with torch.inference_mode():
        out = network(x)[0, 0].numpy()
    network.train()
    mse = float(np.mean((out - clean) ** 2))
    return 10 * math.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--exclude", nargs="*", default=[], help="file names in --data to hold out")
    p.add_argument("--validation", type=Path, help="a clean volume for validation PSNR (a 96³ centre crop is used)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=48, help="patch edge in voxels (a multiple of 4)")
    p.add_argument("--white-noise-only", action="store_true",
                   help="Gaussian and Rician noise only (no FBP-correlated CT noise or speckle)")
    p.add_argument("--phantom-fraction", type=float, default=0.3,
                   help="share of steps trained on noise-free procedural phantoms instead of the volumes")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--export", type=Path, help="write the final model file here")
    p.add_argument("--name", default="autoencoder-v1")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    print("loading volumes", flush=True)
    volumes = load_training_volumes(args.data, set(args.exclude))
    validation = None
    if args.validation:
        v = sitk.GetArrayFromImage(sitk.ReadImage(str(args.validation))).astype(np.float32)
        v = IntensityNormalizer.fit(v, "mr").normalize(v)
        c = [n // 2 for n in v.shape]
        validation = np.ascontiguousarray(v[c[0] - 48 : c[0] + 48, c[1] - 48 : c[1] + 48, c[2] - 48 : c[2] + 48])

    config = NetworkConfig()
    network = build_network(config)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / WARMUP_STEPS)
        * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, args.max_steps) / args.max_steps))),
    )
    step, elapsed = 0, 0.0
    checkpoint = args.out / "checkpoint.pt"
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed at step {step}", flush=True)

    noise_kinds = WHITE_NOISE_BY_MODALITY if args.white_noise_only else NOISE_BY_MODALITY
    log = open(args.out / "log.csv", "a", newline="", encoding="utf-8")
    writer = csv.writer(log)
    started = time.time() - elapsed
    running = None
    while step < args.max_steps:
        if rng.random() < args.phantom_fraction:
            noise = RandomNoise(kinds=("gaussian", "rician") if args.white_noise_only else ("gaussian", "rician", "ct"),
                                sigma_range=SIGMA_RANGE)
            batch = np.stack([random_phantom((args.patch,) * 3, rng) for _ in range(args.batch)])
        else:
            volume = volumes[rng.integers(len(volumes))]
            noise = RandomNoise(kinds=noise_kinds[volume["modality"]], sigma_range=SIGMA_RANGE)
            batch = sample_batch(volume, args.batch, rng, args.patch)
        x, clean, levels = make_inputs(batch, noise, rng)
        weights = 1.0 / (levels**2 + WEIGHT_SIGMA_FLOOR**2)
        loss = ((network(x) - clean) ** 2).mean(dim=(1, 2, 3, 4)).mul(weights).mean()
        if not torch.isfinite(loss):
            raise SystemExit(f"step {step}: loss is {loss.item()}; stopping (lower --lr?)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 25 == 0:
            row = [step, f"{time.time() - started:.0f}", f"{running:.4f}", f"{schedule.get_last_lr()[0]:.2e}"]
            if validation is not None and step % 250 == 0:
                row += [f"{validation_psnr(network, validation, s):.2f}" for s in (0.03, 0.05, 0.10)]
            writer.writerow(row)
            log.flush()
            print(" ".join(map(str, row)), flush=True)
        if step % 100 == 0 or step == args.max_steps:
            state = {
                "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
                "step": step, "elapsed": time.time() - started, "config": config.to_dict(),
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            os.replace(checkpoint.with_suffix(".tmp"), checkpoint)

    if args.export:
        card = ModelCard(
            name=args.name,
            description="3D residual autoencoder (noise-predicting, noise-level input) for CT, MR and US.",
            network=config,
            noise_kinds=sorted({k for v in volumes for k in noise_kinds[v["modality"]]}),
            noise_range=SIGMA_RANGE,
            modalities=sorted({v["modality"] for v in volumes}),
            training_data=[v["name"] for v in volumes] + [f"procedural phantoms ({args.phantom_fraction:.0%} of steps)"],
            training={
                "script": "training/simple_synthetic.py", "steps": step, "batch": args.batch,
                "patch": f"{args.patch}^3 (thick-slice volumes: flatter patches of similar size)",
                "loss": f"MSE weighted by 1/(sigma^2 + {WEIGHT_SIGMA_FLOOR}^2)", "optimizer": f"Adam lr {args.lr} cosine", "seed": args.seed,
                "minutes": round((time.time() - started) / 60, 1), "device": "cpu",
            },
        )
        sha = save_model(args.export, network, card)
        print(json.dumps({"export": str(args.export), "sha256": sha}), flush=True)


if __name__ == "__main__":
    main()
