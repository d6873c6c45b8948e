"""training/: config parsing, data discovery (files, DICOM series, pairs), the split by volume, patch shapes."""
from __future__ import annotations

import numpy as np
import pytest

from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.io.volume import Volume
from conftest import oblique_geometry, phantom
from training.batches import BatchMaker
from training.noise_source import PatchNoise
from training.config import DataConfig, TrainConfig, config_from_dict, config_to_dict, load_config
from training.data import VolumeSource, find_pairs, find_volumes, split_by_volume, volume_stem
from training.errors import ConfigError, DataError
from training.patches import PatchSampler, check_patch_size, fit_patch_shape
from training.volumes import BLOCK_AVERAGE_MIN_LENGTH, TrainingVolume, block_average, load_volume
from training_support import make_pairs, make_volumes


@pytest.mark.parametrize("data, needle", [
    ({"mode": "denoise"}, "mode must be one of synthetic, paired, self-supervised, gan, got 'denoise'"),
    ({"data": {"patch_szie": [8, 8, 8]}}, "data: unknown key(s) patch_szie; valid: patch_size"),
    ({"data": {"patch_size": [16, 16]}}, "data.patch_size must be 3 integer(s) >= 1, got [16, 16]"),
    ({"noise": {"sigma_range": [0.2, 0.1]}}, "noise.sigma_range must have low <= high, got [0.2, 0.1]"),
    ({"noise": {"kinds": {"mr": ["poisson"]}}}, "noise.kinds['mr'] must be one of gaussian, rician, ct, speckle, ct-projection, mr-kspace, us-speckle, got 'poisson'"),
    ({"augment": {"motion": 1.5}}, "augment.motion must be in [0, 1], got 1.5"),
    ({"gan": {"adversarial_loss": "wgan"}}, "gan.adversarial_loss must be one of lsgan, nonsaturating, got 'wgan'"),
    ({"network": {"architecture": "unet"}}, "network: architecture must be one of"),
    ({"optim": {"lr": 0}}, "optim.lr must be in (0, 1], got 0"),
    ({"data": {"block_average": 0}}, "data.block_average must be 1 integer(s) >= 1, got 0"),
    ({"noise": {"ranges": {"mr-fft": {}}}}, "noise.ranges kind must be one of gaussian"),
    ({"noise": {"ranges": {"mr-kspace": {"matrix": [1, 2]}}}}, "noise.ranges['mr-kspace']: ranges of mr-kspace name unknown parameters ['matrix']"),
    ({"noise": {"ranges": {"mr-kspace": {"coils": {"gamma": 1}}}}}, "noise.ranges['mr-kspace']: a range is a value"),
])
def test_config_errors_name_key_rule_and_value(data, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert needle in str(info.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_are_validated():
    assert TrainConfig().with_overrides(mode="gan", max_steps=None).mode == "gan"
    with pytest.raises(ConfigError, match="max_steps must be 1 integer"):
        TrainConfig().with_overrides(max_steps=0)


def test_find_volumes_reads_files_and_dicom_series_recursively(tmp_path):
    make_volumes(tmp_path / "data", 2)
    (tmp_path / "data" / "patient").mkdir()
    write_volume(Volume(phantom((6, 24, 24)) * 400, oblique_geometry()), tmp_path / "data" / "patient" / "series1")
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    names = [v.name for v in find_volumes(tmp_path / "data")]
    assert names == ["case0.nrrd", "case1.nrrd", "patient/series1"]
    assert [v.name for v in find_volumes(tmp_path / "data", exclude=("case1*",))] == ["case0.nrrd", "patient/series1"]
    chosen = find_volumes(tmp_path / "data", exclude=("case0*",), include=("case*", "patient/series1"))
    assert [v.name for v in chosen] == ["case1.nrrd", "patient/series1"]
    with pytest.raises(DataError, match=r"data.include \['case9.nrrd'\] match none of the volumes in --data .*: case0.nrrd"):
        find_volumes(tmp_path / "data", include=("case*", "case9.nrrd"))


def test_find_volumes_refuses_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_volumes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no volumes"):
        find_volumes(tmp_path / "empty")


def test_pairs_match_by_name_without_extension(tmp_path):
    pairs = find_pairs(make_pairs(tmp_path / "p", 2))
    assert [(p.name, p.target.name) for p in pairs] == [("case0.nii.gz", "case0.nrrd"), ("case1.nii.gz", "case1.nrrd")]
    assert [p.name for p in find_pairs(tmp_path / "p", include=("case1.*",))] == ["case1.nii.gz"]
    assert volume_stem("a.b.nii.gz") == "a.b" and volume_stem("CT.DCM") == "CT" and volume_stem("patient/s1") == "patient/s1"
    make_volumes(tmp_path / "p" / "noisy", 1, ext=".mha", first_seed=7)
    with pytest.raises(DataError, match=r"unmatched pairs \(1 in noisy/ without a partner: case7.mha\)"):
        find_pairs(tmp_path / "p")
    with pytest.raises(DataError, match="missing: clean/"):
        find_pairs(make_volumes(tmp_path / "q" / "noisy", 1).parent)


def test_split_is_by_volume_and_seeded():
    names = [f"v{i}" for i in range(10)]
    train, validation = split_by_volume(names, 0.2, seed=3)
    assert len(validation) == 2 and set(train) | set(validation) == set(names) and not set(train) & set(validation)
    assert split_by_volume(names, 0.2, seed=3) == (train, validation)
    assert split_by_volume(names, 0.2, held_out=("v1", "v9"))[1] == ["v1", "v9"]
    assert split_by_volume(["only"], 0.5) == (["only"], [])
    with pytest.raises(DataError, match="match none"):
        split_by_volume(names, 0.2, held_out=("x*",))


def test_patch_shapes_fit_thick_slices_and_multiples():
    assert fit_patch_shape((48, 48, 48), (100, 200, 200), (4, 4, 4)) == (48, 48, 48)
    depth, height, width = fit_patch_shape((48, 48, 48), (19, 384, 384), (4, 4, 4))
    assert depth == 16 and height == width and height % 4 == 0 and height > 48
    assert 0.8 < depth * height * width / 48**3 < 1.05
    assert fit_patch_shape((48, 48, 48), (19, 40, 384), (4, 4, 4)) is None  # too narrow in-plane
    check_patch_size((16, 16, 16), (2, 4, 4), "test")
    with pytest.raises(ConfigError, match=r"multiples of \[4, 4, 4\].*got \[18, 16, 16\]"):
        check_patch_size((18, 16, 16), (4, 4, 4), "network.size_multiple")


def _volume(name, shape, foreground=None):
    image = np.zeros(shape, np.float32)
    fg = np.argwhere(np.ones(shape, bool)) if foreground is None else foreground
    return TrainingVolume(name, "mr", image, None, fg.astype(np.int32), (1.0, 1.0, 1.0))


def test_sampler_prefers_foreground_and_mixes_thin_volumes():
    corner = np.array([[2, 2, 2]])
    sampler = PatchSampler([_volume("a", (40, 40, 40), corner)], (8, 8, 8), (2, 2, 2), 1.0)
    shape, refs = sampler.sample(np.random.default_rng(0), 5)
    assert shape == (8, 8, 8) and {r.start for r in refs} == {(0, 0, 0)}
    mixed = PatchSampler([_volume("thick", (40, 40, 40)), _volume("thin", (4, 64, 64))], (16, 16, 16), (2, 2, 2), 0.5)
    shapes = {mixed.sample(np.random.default_rng(s), 2)[0] for s in range(20)}
    assert (16, 16, 16) in shapes and all(s[0] == 4 for s in shapes if s != (16, 16, 16))
    with pytest.raises(DataError, match=r"data.patch_size \[64, 64, 64\].*larger than every training volume"):
        PatchSampler([_volume("a", (40, 40, 40))], (64, 64, 64), (2, 2, 2), 0.5)


def test_phantom_batches_are_exactly_clean_targets_with_mr_noise():
    config = config_from_dict({"data": {"patch_size": [16, 16, 16], "batch_size": 3, "phantom_fraction": 1.0},
                               "noise": {"sigma_range": [0.05, 0.05], "kinds": {"mr": ["gaussian"]}}})
    volume = _volume("a", (20, 20, 20))  # all zeros: a patch of it would be a flat zero target
    batch = BatchMaker("synthetic", [volume], config, (4, 4, 4))(np.random.default_rng(0))
    assert batch.clean.shape == batch.noisy.shape == (3, 16, 16, 16)
    assert batch.clean.std(axis=(1, 2, 3)).min() > 0.02  # phantoms, not the zero volume
    assert np.std(batch.noisy - batch.clean) == pytest.approx(0.05, rel=0.05)
    # The loss level is the realised noise SD (physics kinds have no single drawn level), within sampling error.
    assert np.allclose(batch.sigma, np.hypot(0.05, config.noise.weight_floor), rtol=0.03)
    # Self-supervised batches never use phantoms: there is no noise model for them to learn from.
    never = config_from_dict({"data": {"patch_size": [16, 32, 32], "batch_size": 1, "phantom_fraction": 1.0}})
    assert BatchMaker("self-supervised", [_volume("b", (20, 40, 40))], never, (4, 8, 8)).phantom_fraction == 0
    with pytest.raises(ConfigError, match=r"data.phantom_fraction must be in \[0, 1\], got 1.5"):
        config_from_dict({"data": {"phantom_fraction": 1.5}})


def test_non_finite_voxels_are_filled_with_the_median(tmp_path):
    image = phantom((8, 24, 24)) * 400
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    write_volume(Volume(image, oblique_geometry()), tmp_path / "holes.nrrd")
    volume = load_volume(VolumeSource("holes.nrrd", tmp_path / "holes.nrrd"), DataConfig(modality="mr"))
    assert np.isfinite(volume.image).all()
    filled = volume.image[0, 0, :3]
    assert np.all(filled == filled[0]) and filled[0] == pytest.approx(np.median(volume.image), abs=1e-6)


def test_configured_ranges_replace_the_kinds_own_in_training_patches():
    config = config_from_dict({"noise": {"kinds": {"mr": ["mr-kspace"]},
                                         "ranges": {"mr-kspace": {"acquired": [[1, 1], [0.3, 0.31], [0.3, 0.31]],
                                                                  "coils": 1}}}})
    noise = PatchNoise(config.noise.kinds, config.noise.sigma_range,
                       {kind: config.noise.kind_ranges(kind) for kind in config.noise.ranges})
    rng = np.random.default_rng(0)
    params = [noise.draw("mr", rng).draw(rng) for _ in range(20)]
    assert all(0.3 <= p.acquired[1] <= 0.31 and p.acquired[0] == 1 and p.coils == 1 for p in params)
    # sigma_range still sets the level
    low, high = config.noise.sigma_range
    assert all(low <= p.sigma <= high for p in params)


def test_block_average_means_each_block_and_drops_the_remainder():
    array = np.arange(5 * 6 * 4, dtype=np.float32).reshape(5, 6, 4)
    averaged = block_average(array, (2, 3, 1))
    assert averaged.shape == (2, 2, 4)
    assert averaged[1, 1, 2] == pytest.approx(array[2:4, 3:6, 2].mean())
    assert block_average(array, (1, 1, 1)) is array


def test_block_averaged_volumes_carry_less_of_their_own_noise_on_a_coarser_grid(tmp_path):
    rng = np.random.default_rng(0)
    long = BLOCK_AVERAGE_MIN_LENGTH
    image = 200.0 + 20.0 * rng.standard_normal((16, long, long + 8)).astype(np.float32)
    image[:, :8] = 0.0  # a little background so the normaliser sees a range
    write_volume(Volume(image, oblique_geometry()), tmp_path / "noisy.nrrd")
    source = VolumeSource("noisy.nrrd", tmp_path / "noisy.nrrd")
    plain = load_volume(source, DataConfig(modality="mr"))
    averaged = load_volume(source, DataConfig(modality="mr", block_average=2))
    # the short axis (16 slices) keeps its slices; the long ones halve
    assert averaged.shape == (16, long // 2, (long + 8) // 2)
    assert averaged.spacing == pytest.approx((plain.spacing[0], 2 * plain.spacing[1], 2 * plain.spacing[2]))
    flat_plain, flat_averaged = plain.image[:, 8:], averaged.image[:, 4:]
    # white noise averaged over 2 × 2 voxels: its SD halves
    assert np.std(flat_averaged) / np.std(flat_plain) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("modality, kind", [("mr", "mr-kspace"), ("ct", "ct-projection"), ("us", "us-speckle")])
def test_physics_noise_trains_towards_the_acquisition_without_noise(modality, kind):
    config = config_from_dict({"data": {"patch_size": [8, 16, 16], "batch_size": 2, "phantom_fraction": 0.0},
                               "augment": {"flips": False, "intensity_scale": [1.0, 1.0], "anisotropy": 0.0,
                                           "bias_field": 0.0, "motion": 0.0, "ghosting": 0.0},
                               "noise": {"kinds": {modality: [kind]}}})
    image = (phantom((8, 40, 40)) * 0.8 + 0.1).astype(np.float32)  # normalised: CT 0.1–0.9 is −800…+800 HU
    volume = TrainingVolume("v", modality, image, None, np.argwhere(np.ones(image.shape, bool)).astype(np.int32),
                            (1.0, 0.8, 0.8))
    batch = BatchMaker("synthetic", [volume], config, (4, 4, 4))(np.random.default_rng(3))
    noise = batch.noisy - batch.clean
    assert noise.std() > 2e-4  # noise was added (a 32 mm wide slice attenuates little: CT noise is small)
    realised = np.sqrt(batch.sigma**2 - config.noise.weight_floor**2)
    expected = np.maximum(noise.std(axis=(1, 2, 3)), config.noise.sigma_range[0])  # levels are clamped at the min
    assert np.allclose(realised, expected, rtol=0.05)  # ...and the loss knows how much
    if kind != "ct-projection":
        # The target is the noise-free acquisition (k-space blurred, log-compressed), not the volume's crop.
        assert not any(np.allclose(c, image[:, y:y + 16, x:x + 16], atol=1e-3)
                       for c in batch.clean for y in range(25) for x in range(25))


def test_noisier2noise_compares_the_noisy_target_with_the_mixed_prediction():
    import torch

    from training.modes.supervised import noisier2noise_prediction

    g, z = torch.full((2, 1, 2, 2, 2), 1.0), torch.full((2, 1, 2, 2, 2), 3.0)
    mixed = noisier2noise_prediction(g, z, torch.tensor([1.0, float("inf")]))
    assert torch.allclose(mixed[0], torch.full_like(g[0], 2.0))  # α = 1: (g + z) / 2
    assert torch.equal(mixed[1], g[1])  # a clean target: the output itself
    # Why it works: with n and m alike, E[y | z] = (x + z) / 2, so (g + z) / 2 = E[y | z] holds for g = x.
    rng = np.random.default_rng(0)
    x = 0.5
    y = x + rng.normal(0, 0.1, 200_000)
    z = y + rng.normal(0, 0.1, 200_000)
    best_g = 2 * y.mean() - z.mean()  # least squares of (g + z)/2 − y over a constant g
    assert abs(best_g - x) < 0.002


def test_noisier2noise_batches_know_how_much_noise_was_added_to_the_targets_own():
    config = config_from_dict({"data": {"patch_size": [8, 16, 16], "batch_size": 3, "phantom_fraction": 0.0},
                               "noise": {"sigma_range": [0.04, 0.04], "kinds": {"mr": ["gaussian"]},
                                         "noisier2noise": True}})
    volume = _volume("a", (8, 24, 24))
    volume.noise_level = 0.02
    batch = BatchMaker("synthetic", [volume], config, (4, 4, 4))(np.random.default_rng(0))
    realised = np.std(batch.noisy - batch.clean, axis=(1, 2, 3))
    assert np.allclose(batch.extras["alpha2"], (realised / 0.02) ** 2, rtol=1e-4)
    phantoms = config_from_dict({**config_to_dict(config), "data": {**config_to_dict(config)["data"], "phantom_fraction": 1.0}})
    assert np.isinf(BatchMaker("synthetic", [volume], phantoms, (4, 4, 4))(np.random.default_rng(0)).extras["alpha2"]).all()
    with pytest.raises(ConfigError, match="noise.noisier2noise must be true or false, got 'on'"):
        config_from_dict({"noise": {"noisier2noise": "on"}})


def test_levels_follow_the_networks_conditioning():
    from MedicalDenoiseLib.estimation.noise_estimation import estimate_fine_scale_sigma, estimate_noise_sigma

    config = config_from_dict({"data": {"patch_size": [8, 16, 16], "batch_size": 2, "phantom_fraction": 1.0}})
    volume = _volume("a", (8, 24, 24))
    for conditioning, estimate in (("noise-sd", estimate_noise_sigma), ("fine-scale-sd", estimate_fine_scale_sigma)):
        batch = BatchMaker("synthetic", [volume], config, (4, 4, 4), conditioning)(np.random.default_rng(0))
        assert np.allclose(batch.levels, [estimate(p) for p in batch.noisy])
    blind = BatchMaker("synthetic", [volume], config, (4, 4, 4), None)(np.random.default_rng(0))
    assert not blind.levels.any()  # a blind network is told nothing, so nothing is estimated
