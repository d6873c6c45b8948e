"""What a strength tells the network: the contract that the SD ``auto`` estimated, given back as a number,
gives the ``auto`` result, for conditioned and blind models alike."""
from __future__ import annotations

import pytest

from MedicalDenoiseLib.inference.strength import network_settings, parse_strength

SCALE = 2000.0  # image units per normalised unit (CT: HU)


@pytest.mark.parametrize("conditioned, conditioning", [(True, "noise-sd"), (True, "fine-scale-sd"), (False, "noise-sd")])
def test_the_estimated_sd_as_a_number_gives_the_auto_settings(conditioned, conditioning):
    estimated, fine = 0.012, 0.005  # correlated noise: the high-pass estimate sees less than half of it
    auto = network_settings("auto", estimated, fine, SCALE, conditioned, conditioning)
    given = network_settings(estimated * SCALE, estimated, fine, SCALE, conditioned, conditioning)
    assert given.level == pytest.approx(auto.level) if conditioned else given.level is None
    assert given.blend == pytest.approx(auto.blend) and given.used_sd == pytest.approx(auto.used_sd)
    assert auto.used_sd == pytest.approx(estimated)


def test_a_conditioned_model_is_told_the_level_on_the_scale_it_was_trained_with():
    estimated, fine = 0.012, 0.005
    twice = network_settings(2 * estimated * SCALE, estimated, fine, SCALE, True, "fine-scale-sd")
    assert twice.level == pytest.approx(2 * fine)  # not 2 × the full SD: the model never saw that scale
    assert network_settings(2 * estimated * SCALE, estimated, fine, SCALE, True, "noise-sd").level == pytest.approx(2 * estimated)
    assert network_settings("strong", estimated, fine, SCALE, True, "fine-scale-sd").level == pytest.approx(1.6 * fine)


def test_a_blind_model_scales_what_it_removes_within_bounds():
    assert network_settings("mild", 0.01, 0.01, SCALE, False).blend == pytest.approx(0.6)
    assert network_settings(0.005 * SCALE, 0.01, 0.01, SCALE, False).blend == pytest.approx(0.5)
    assert network_settings(10 * 0.01 * SCALE, 0.01, 0.01, SCALE, False).blend == pytest.approx(1.6)  # capped
    assert network_settings(5.0, 0.0, 0.0, SCALE, False).blend == 1.0  # no measurable noise: nothing to scale by


def test_without_measurable_noise_a_given_sd_is_told_as_it_is():
    settings = network_settings(20.0, 0.0, 0.0, SCALE, True, "fine-scale-sd")
    assert settings.level == pytest.approx(0.01) and settings.used_sd == pytest.approx(0.01)


def test_bad_strengths_and_conditionings_are_refused():
    for bad in ("-1", "loud", float("nan")):
        with pytest.raises(ValueError, match="strength must be auto, mild, standard, strong or a noise SD >= 0"):
            parse_strength(bad)
    assert parse_strength("Strong") == "strong" and parse_strength("12.5") == 12.5
    with pytest.raises(ValueError, match="conditioning must be one of noise-sd, fine-scale-sd, got 'x'"):
        network_settings("auto", 0.01, 0.01, SCALE, True, "x")
