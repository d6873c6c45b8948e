"""Shared fixtures: tiny seeded volumes and a tiny untrained model file. Tests never read ../shared."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from MedicalDenoiseLib.models.model_files import ModelCard, save_model
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
from MedicalDenoiseLib.io.volume import Geometry, Volume

torch.set_num_threads(2)


def phantom(shape=(19, 26, 23), seed=0, low=0.0, high=1.0) -> np.ndarray:
    """Smooth background with a few bright spheres and a dark cube, float32 in [low, high]."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    image = 0.3 + 0.1 * x
    for _ in range(4):
        c = rng.uniform(-0.5, 0.5, 3)
        r = rng.uniform(0.15, 0.35)
        image = np.where((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r, rng.uniform(0.6, 1.0), image)
    image[(abs(z) < 0.2) & (abs(y + 0.6) < 0.2) & (abs(x) < 0.2)] = 0.05
    return (low + (high - low) * image).astype(np.float32)


def neighbour_kernel(along_x: float, along_y: float) -> np.ndarray:
    """A 17 × 17 noise autocorrelation kernel (``ScanNoise.kernel``): 1 at lag 0, the given correlations at
    one voxel along x and along y."""
    kernel = np.zeros((17, 17))
    kernel[8, 8] = 1.0
    kernel[8, 7] = kernel[8, 9] = along_x
    kernel[7, 8] = kernel[9, 8] = along_y
    return kernel


def oblique_geometry(spacing=(0.7, 0.9, 2.5)) -> Geometry:
    """A rotated, anisotropic grid with a non-zero origin."""
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return Geometry(tuple(spacing), (-101.25, 33.5, 7.125), tuple((rz @ rx).ravel()))


@pytest.fixture
def ct_volume() -> Volume:
    """An int16 CT-like phantom in HU on an oblique anisotropic grid, with some noise."""
    rng = np.random.default_rng(1)
    hu = phantom(low=-1000, high=1200) + rng.normal(0, 30, (19, 26, 23))
    return Volume(np.rint(hu).astype(np.int16), oblique_geometry(), modality="ct", source="ct-phantom")


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory):
    """An untrained two-level autoencoder saved as a model file (fast to run anywhere)."""
    torch.manual_seed(0)
    config = NetworkConfig(features=(4, 8), blocks_per_level=(1, 1))
    card = ModelCard(name="tiny-test", description="untrained, for tests", network=config,
                     noise_kinds=["gaussian"], noise_range=(0.005, 0.15), modalities=["mr"])
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(path, build_network(config), card)
    return path


def assert_refused_in_one_line(code: int, err: str, prefix: str, *needles: str) -> None:
    """A refusal: non-zero exit, one line on stderr starting with ``prefix`` and naming each needle, no traceback."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
