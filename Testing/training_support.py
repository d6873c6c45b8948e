"""Helpers for the training tests: tiny generated volume folders, a tiny config, and running the trainer.

Volumes are at most 20×24×24 and the network has features (4, 8), so a step takes milliseconds on 2 cores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from conftest import assert_refused_in_one_line, oblique_geometry, phantom
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.io.volume import Volume

SHAPE = (20, 24, 24)

TINY = {
    "name": "tiny-run",
    "network": {"features": [4, 8], "blocks_per_level": [1, 1]},
    "data": {"patch_size": [16, 16, 16], "batch_size": 2},
    "validation": {"fraction": 0.34, "every": 4, "crop": [16, 16, 16], "sigmas": [0.05]},
    "noise": {"sigma_range": [0.02, 0.1]},
    "optim": {"lr": 0.003, "warmup_steps": 2},
    "augment": {"anisotropy": 0.5, "bias_field": 0.5, "motion": 0.5, "ghosting": 0.5},
    "gan": {"discriminator_features": [4, 8], "lambda_feature": 0.1},
    # One thread: on 2 busy cores, OpenMP threads contending for them make tiny convolutions ~100× slower.
    "run": {"log_every": 2, "checkpoint_every": 4, "threads": 1},
}


def merged(base: dict, changes: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in changes.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def write_config(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(merged(TINY, changes)), encoding="utf-8")
    return path


def make_volumes(
    folder: Path, count: int = 3, noise: float = 0.0, ext: str = ".nrrd", shape=SHAPE, first_seed: int = 0,
    names: tuple[str, ...] = (),
) -> Path:
    """``count`` MR-like phantoms (0–400) on an oblique grid, optionally with Gaussian noise (fraction of 400).

    Files are ``case<seed><ext>``, or ``names`` (one volume each, the format from the extension) when given.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = names or tuple(f"case{first_seed + i}{ext}" for i in range(count))
    for i, name in enumerate(names):
        seed = first_seed + i
        image = phantom(shape, seed=seed) * 400
        if noise:
            image = image + np.random.default_rng(100 + seed).normal(0, noise * 400, shape)
        write_volume(Volume(image.astype(np.float32), oblique_geometry()), folder / name)
    return folder


def make_pairs(folder: Path, count: int = 3, noise: float = 0.05) -> Path:
    """``folder/noisy/caseN.nii.gz`` and ``folder/clean/caseN.nrrd`` (different formats, matched by name)."""
    make_volumes(folder / "noisy", count, noise=noise, ext=".nii.gz")
    make_volumes(folder / "clean", count, ext=".nrrd")
    return folder


def run_train(capsys, *argv) -> tuple[int, str, str]:
    from training.train import main

    code = main([str(a) for a in argv] + (["--progress", "none"] if "--progress" not in argv else []))
    out, err = capsys.readouterr()
    return code, out, err


def read_log(run: Path) -> list[dict]:
    import csv

    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_refused(code: int, err: str, *needles: str) -> None:
    """One line on stderr, starting 'training: error: ', naming what went wrong; no traceback."""
    assert_refused_in_one_line(code, err, "training: error: ", *needles)
