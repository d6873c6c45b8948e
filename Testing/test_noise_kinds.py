"""The noise-kind registry, the random wrapper that draws parameters for training, and the distributions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from MedicalDenoiseLib.noise import NOISE_KINDS, GaussianNoise, NoiseContext, kinds_for_modality, noise_kind, realise
from MedicalDenoiseLib.noise.parameter_ranges import (Choice, LogUniform, PerAxis, Sometimes, Uniform, draw_parameters,
                                                      range_from_spec)
from MedicalDenoiseLib.noise.random_model import RandomNoiseModel


def test_every_kind_draws_a_model_whose_realisation_is_consistent():
    rng = np.random.default_rng(0)
    patches = {"ct": np.full((6, 40, 40), 0.5, np.float32), "mr": np.full((6, 40, 40), 0.6, np.float32),
               "us": np.full((6, 40, 40), 0.5, np.float32)}
    for name, kind in NOISE_KINDS.items():
        for modality in kind.modalities:
            result = kind.random().simulate(patches[modality], rng)
            assert result.noisy.shape == result.clean.shape == patches[modality].shape
            assert result.noisy.dtype == np.float32 and np.isfinite(result.noisy).all()
            assert result.params["kind"] == name
            assert result.sigma == pytest.approx(float(result.noise.std()), rel=1e-4, abs=1e-7)
            assert 0 < result.sigma < 1.0, name  # some noise, and no more than the normalised range


def test_modalities_list_their_physics_and_white_kinds():
    assert kinds_for_modality("ct") == ("gaussian", "ct", "ct-projection")
    assert kinds_for_modality("mr") == ("gaussian", "rician", "mr-kspace")
    assert kinds_for_modality("us") == ("gaussian", "speckle", "us-speckle")
    with pytest.raises(ValueError, match="modality must be one of ct, mr, us"):
        kinds_for_modality("pet")
    with pytest.raises(ValueError, match="noise kind must be one of gaussian, rician"):
        noise_kind("poisson")


def test_ct_projection_kind_works_in_normalised_units():
    patch = np.full((4, 48, 48), 0.5, np.float32)  # water in normalised CT
    kind = noise_kind("ct-projection")
    fixed = {"photons": 1e5, "electronic_sd": 5.0, "kernel": "hann", "slice_average": 1}
    result = kind.random(**fixed).simulate(patch, np.random.default_rng(1), NoiseContext(spacing=(1.0, 1.0, 1.0)))
    in_hu = kind.fixed(**fixed, pixel_size_mm=1.0).simulate(patch * 2000 - 1000, np.random.default_rng(1))
    assert result.params["hu_offset"] == -1000.0 and result.params["hu_per_unit"] == 2000.0
    np.testing.assert_allclose(result.noise * 2000, in_hu.noise, rtol=1e-3, atol=1e-2)


def test_random_model_is_seedable_and_keeps_draws_inside_the_ranges():
    model = noise_kind("mr-kspace").random()
    image = np.full((4, 24, 24), 0.5, np.float32)
    a = model.simulate(image, np.random.default_rng(7))
    b = model.simulate(image, np.random.default_rng(7))
    assert np.array_equal(a.noisy, b.noisy) and a.params == b.params
    for seed in range(30):
        params = model.simulate(image, np.random.default_rng(seed)).params
        assert 0.005 <= params["sigma"] <= 0.1
        assert 0.6 <= params["acquired"][0] <= 1 and all(0.45 <= f <= 1 for f in params["acquired"][1:])
        assert params["partial_fourier"] == 1.0 or 0.625 <= params["partial_fourier"] <= 1
        assert params["coils"] in (1, 4, 8)


def test_overrides_fix_parameters_and_unknown_names_are_refused():
    model = noise_kind("gaussian").random(sigma=0.2)
    assert model.draw(np.random.default_rng(0)) == GaussianNoise(0.2)
    with pytest.raises(ValueError, match=r"unknown parameters \['level'\]; valid: sigma"):
        RandomNoiseModel(GaussianNoise, {"level": Uniform(0, 1)}, "gaussian")


def test_plain_models_realise_with_the_input_as_target():
    image = np.full((4, 16, 16), 0.3, np.float32)
    result = realise(GaussianNoise(0.1), image, np.random.default_rng(0))
    assert np.array_equal(result.clean, image)
    assert result.sigma == pytest.approx(0.1, rel=0.1)
    assert result.params == {"sigma": 0.1}


def test_distributions_have_their_defining_shape():
    rng = np.random.default_rng(0)
    logs = np.log10([LogUniform(0.001, 0.1).draw(rng) for _ in range(4000)])
    assert logs.min() >= -3 and logs.max() <= -1
    assert np.histogram(logs, bins=4, range=(-3, -1))[0].min() > 900  # uniform in log: each quarter ~1000
    uniform = np.array([Uniform(2.0, 4.0).draw(rng) for _ in range(4000)])
    assert uniform.mean() == pytest.approx(3.0, abs=0.03)
    assert uniform.std() == pytest.approx(2 / math.sqrt(12), rel=0.05)
    choices = [Choice(("a", "b", "b")).draw(rng) for _ in range(3000)]
    assert choices.count("b") / 3000 == pytest.approx(2 / 3, abs=0.03)
    sometimes = [Sometimes(0.25, Uniform(5, 6), 1.0).draw(rng) for _ in range(4000)]
    assert np.mean([s != 1.0 for s in sometimes]) == pytest.approx(0.25, abs=0.02)
    drawn = draw_parameters({"a": PerAxis((Uniform(0, 1), Choice((7,)))), "b": "fixed"}, rng)
    assert 0 <= drawn["a"][0] <= 1 and drawn["a"][1] == 7 and drawn["b"] == "fixed"


@pytest.mark.parametrize("make, message", [
    (lambda: Uniform(2.0, 1.0), r"Uniform needs finite low <= high"),
    (lambda: LogUniform(0.0, 1.0), r"LogUniform needs low > 0"),
    (lambda: Choice(()), "Choice needs at least one option"),
    (lambda: Sometimes(1.5, Uniform(0, 1), 0), r"probability must be in \[0, 1\]"),
])
def test_bad_ranges_name_the_rule(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_ranges_read_from_their_plain_spelling():
    assert range_from_spec(0.5) == 0.5 and range_from_spec("3d") == "3d"
    assert range_from_spec([0.3, 1]) == Uniform(0.3, 1.0)
    assert range_from_spec({"log_uniform": [0.001, 0.1]}) == LogUniform(0.001, 0.1)
    assert range_from_spec({"choice": [1, 4, 8]}) == Choice((1, 4, 8))
    assert range_from_spec([[0.6, 1], [0.3, 1], {"choice": [1.0]}]) == PerAxis(
        (Uniform(0.6, 1.0), Uniform(0.3, 1.0), Choice((1.0,))))
    for bad in ([1, 2, 3], {"gamma": [1, 2]}, [], {"log_uniform": [0, 1]}, None):
        with pytest.raises(ValueError):
            range_from_spec(bad)
