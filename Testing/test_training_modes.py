"""training/: a few steps of every mode on tiny generated volumes, and the loss falling where learning is trivial."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from MedicalDenoiseLib.evaluation.metrics import psnr
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.models.model_files import load_model
from training.config import config_from_dict
from training.errors import ConfigError
from training.init_model import initial_network
from training.subsampling import neighbour_pairs, subsample_numpy, subsample_torch
from conftest import oblique_geometry, phantom
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.io.volume import Volume
from training_support import SHAPE, TINY, make_pairs, make_volumes, merged, read_log, run_train, write_config


@pytest.mark.parametrize("mode", ["synthetic", "paired", "self-supervised", "gan", "gan-paired"])
def test_every_mode_trains_validates_and_checkpoints(capsys, tmp_path, mode):
    paired = mode in ("paired", "gan-paired")
    noise = 0.05 if mode == "self-supervised" else 0.0
    data = make_pairs(tmp_path / "data") if paired else make_volumes(tmp_path / "data", noise=noise)
    config = write_config(tmp_path, gan={"pairs": "paired"}) if mode == "gan-paired" else write_config(tmp_path)
    mode = "gan" if mode == "gan-paired" else mode
    run = tmp_path / "run"
    code, out, err = run_train(capsys, "--config", config, "--data", data, "--mode", mode,
                               "--max-steps", 4, "--out", run)
    assert code == 0, err
    assert "done: step 4" in out
    rows = read_log(run)
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert (run / "checkpoint.pt").exists() and (run / "best.pt").exists() and (run / "config.yaml").exists()
    assert any((run / "tensorboard").iterdir())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    # The log reports the validation the checkpoint holds, of the weights at that step.
    metric = "val_n2n" if mode == "self-supervised" else "val_psnr"
    assert state["metrics"]["last"]["step"] == 4
    assert float(rows[-1][metric]) == pytest.approx(state["metrics"]["last"][metric], rel=1e-5)
    if mode != "self-supervised":
        # The noisy input's PSNR, computed here from what was added: Gaussian or Rician noise of SD 0.05
        # (TINY's validation.sigmas) on data range 1, or the pairs' own noise in the normalised units.
        expected = _paired_input_psnr(data) if paired else 20 * np.log10(1 / 0.05)
        assert float(rows[-1]["val_psnr_input"]) == pytest.approx(expected, abs=0.5)
    assert state["step"] == 4 and state["split"]["validation"] == ["case2.nii.gz" if paired else "case2.nrrd"]
    assert state["network_config"]["architecture"] == ("gan_generator" if mode == "gan" else "residual_autoencoder")
    if mode == "gan":
        assert "discriminator" in state["mode"]


def _paired_input_psnr(data) -> float:
    """PSNR of the held-out noisy volume against its clean partner, both normalised as the noisy one fits."""
    noisy = read_volume(data / "noisy" / "case2.nii.gz").array.astype(np.float32)
    clean = read_volume(data / "clean" / "case2.nrrd").array.astype(np.float32)
    normalizer = IntensityNormalizer.fit(noisy, "mr")
    return psnr(normalizer.normalize(clean), normalizer.normalize(noisy), 1.0)


@pytest.mark.parametrize("mode", ["synthetic", "self-supervised"])
def test_loss_falls_when_learning_is_trivial(capsys, tmp_path, mode):
    """Smooth phantoms, white Gaussian noise, no augmentation: a few dozen steps must cut the loss clearly and
    denoise the held-out volume."""
    noisy = mode == "self-supervised"
    data = make_volumes(tmp_path / "data", 3, noise=0.08 if noisy else 0.0)  # case2 is held out
    config = write_config(tmp_path, noise={"kinds": {"mr": ["gaussian"]}, "sigma_range": [0.06, 0.1], "weight_floor": 0},
                          augment={"flips": False, "intensity_scale": [1, 1], "anisotropy": 0, "bias_field": 0,
                                   "motion": 0, "ghosting": 0},
                          optim={"lr": 0.01, "warmup_steps": 0, "min_lr_ratio": 1.0},
                          validation={"every": 50, "sigmas": [0.08]}, run={"log_every": 10})
    code, _, err = run_train(capsys, "--config", config, "--data", data, "--mode", mode, "--max-steps", 150,
                             "--out", tmp_path / "run")
    assert code == 0, err
    # Each row is the mean over its 10 steps. Self-supervised: the reconstruction term estimates the MSE to the
    # clean image (+ σ²); its regulariser is zero for an identity network, so the total need not fall.
    rows = read_log(tmp_path / "run")
    losses = [float(r["reconstruction" if noisy else "loss"]) for r in rows]
    first, last = losses[0], losses[-1]
    assert last < (0.75 if noisy else 0.5) * first, (first, last)
    validated = [r for r in rows if r.get("val_n2n" if noisy else "val_psnr")]
    assert [int(r["step"]) for r in validated] == [50, 100, 150]
    if noisy:
        # The held-out Neighbor2Neighbor loss (no clean reference) falls as the network learns, well below the
        # ~2 an identity network scores (|g1 - g2|² holds the noise of both neighbours; it is divided by σ²).
        scores = [float(r["val_n2n"]) for r in validated]
        assert scores[-1] < scores[0] and scores[-1] < 1.5, scores
    else:
        assert last < 0.8, losses  # 1.0 is what an identity network scores under 1/σ² weighting: this denoises
        # On the held-out volume the output is clearly closer to the clean image than the noisy input was.
        gains = [float(r["val_psnr"]) - float(r["val_psnr_input"]) for r in validated]
        assert gains[-1] > 1.5 and gains[-1] > gains[0] + 1.0, gains


def test_gan_generator_starts_as_the_autoencoder(tiny_model_file):
    config = config_from_dict(merged(TINY, {"mode": "gan", "init": str(tiny_model_file)}))
    generator, network_config, info = initial_network(config)
    autoencoder = load_model(tiny_model_file).network
    assert network_config.architecture == "gan_generator" and info["init_name"] == "tiny-test"
    x = torch.rand(1, 1, 8, 8, 8)
    generator.eval()
    with torch.no_grad():
        assert torch.allclose(generator(x, 0.05), autoencoder(x, 0.05), atol=1e-6)


def test_fine_tuning_from_a_model_file_keeps_its_network(capsys, tmp_path, tiny_model_file):
    data = make_volumes(tmp_path / "data")
    code, out, err = run_train(capsys, "--config", write_config(tmp_path, network={"features": [8, 16]}),
                               "--data", data, "--max-steps", 2, "--out", tmp_path / "run", "--init", tiny_model_file)
    assert code == 0, err
    assert "fine-tuning tiny-test" in out
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["network_config"]["features"] == [4, 8] and state["init_info"]["init_name"] == "tiny-test"


def test_neighbour_subsampling_takes_adjacent_voxels_of_each_cell():
    rng = np.random.default_rng(0)
    batch = rng.random((2, 3, 8, 6)).astype(np.float32)
    first, second = neighbour_pairs(rng, batch.shape)
    g1, g2 = subsample_numpy(batch, first), subsample_numpy(batch, second)
    assert g1.shape == (2, 3, 4, 3)
    rows1, cols1, rows2, cols2 = first // 2, first % 2, second // 2, second % 2
    assert np.all(np.abs(rows1 - rows2) + np.abs(cols1 - cols2) == 1)  # edge neighbours, never the same voxel
    b, d, i, j = 1, 2, 3, 1
    assert g1[b, d, i, j] == batch[b, d, 2 * i + rows1[b, d, i, j], 2 * j + cols1[b, d, i, j]]
    torch_g2 = subsample_torch(torch.from_numpy(batch)[:, None], torch.from_numpy(second))[:, 0]
    assert np.array_equal(torch_g2.numpy(), g2)


def test_a_dicom_series_and_a_ct_file_train_together(capsys, tmp_path):
    """A DICOM series folder is one volume; its Modality tag (CT) picks the Hounsfield normalisation."""
    data = make_volumes(tmp_path / "data", 1)
    hu = np.rint(phantom(SHAPE, seed=5, low=-1000, high=800)).astype(np.int16)
    (data / "patient").mkdir()
    write_volume(Volume(hu, oblique_geometry(), modality="ct"), data / "patient" / "ct_series")
    code, out, err = run_train(capsys, "--config", write_config(tmp_path, validation={"fraction": 0}), "--data", data,
                               "--max-steps", 2, "--out", tmp_path / "run")
    assert code == 0, err
    assert "patient/ct_series: 20×24×24 (z×y×x), ct" in out
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["modalities"] == {"case0.nrrd": "mr", "patient/ct_series": "ct"}


def test_blind_start_keeps_the_image_weights_and_drops_the_level_channel(tiny_model_file):
    config = config_from_dict(merged(TINY, {"init": str(tiny_model_file), "blind": True}))
    blind, network_config, info = initial_network(config)
    conditioned = load_model(tiny_model_file).network
    assert conditioned.config.noise_level_input and not network_config.noise_level_input and info["init_blind"]
    assert info["init_conditioning"] == "fine-scale-sd"  # a fine-tuned conditioned model keeps its level scale
    assert blind.stem[0].weight.shape[1] == 1
    x = torch.rand(1, 1, 8, 8, 8)
    blind.eval()
    with torch.no_grad():
        # Told a level of 0, the conditioned network's level channel adds nothing: the blind one is that network.
        assert torch.allclose(blind(x), conditioned(x, 0.0), atol=1e-6)
        assert not torch.allclose(blind(x), conditioned(x, 0.1), atol=1e-4)
    with pytest.raises(ConfigError, match="blind must be true or false, got 'yes'"):
        config_from_dict(merged(TINY, {"blind": "yes"}))


def test_planar_run_starts_as_the_twin_of_its_volumetric_init(tiny_model_file):
    from MedicalDenoiseLib.models.networks.planar import planar_from_volumetric
    config = config_from_dict(merged(TINY, {"init": str(tiny_model_file), "planar": True,
                                            "data": {"patch_size": [1, 16, 16]}}))
    network, network_config, info = initial_network(config)
    expected = planar_from_volumetric(load_model(tiny_model_file).network)
    assert network_config.spatial_dims == 2 and info["init_name"] == "tiny-test"
    x = torch.rand(2, 1, 1, 16, 16)
    network.eval()
    with torch.no_grad():
        assert torch.allclose(network(x, 0.05), expected(x, 0.05))


def test_a_planar_init_without_planar_is_refused(tmp_path, tiny_model_file):
    from MedicalDenoiseLib.models.model_files import ModelCard, save_model
    from MedicalDenoiseLib.models.networks import NetworkConfig, build_network
    planar = NetworkConfig(features=(4, 8), blocks_per_level=(1, 1), spatial_dims=2)
    path = tmp_path / "planar.safetensors"
    save_model(path, build_network(planar), ModelCard(name="p", description="test", network=planar))
    with pytest.raises(ConfigError, match="planar: true"):
        initial_network(config_from_dict(merged(TINY, {"init": str(path)})))
