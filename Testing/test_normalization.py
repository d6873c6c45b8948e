from __future__ import annotations

import numpy as np
import pytest

from conftest import phantom
from MedicalDenoiseLib.inference.normalization import IntensityNormalizer, guess_modality


def test_ct_uses_fixed_hounsfield_mapping():
    hu = phantom(low=-1000, high=1500)
    norm = IntensityNormalizer.fit(hu, "ct")
    assert norm.normalize(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]
    assert IntensityNormalizer.fit(hu * 0.5, "ct") == norm  # the same for every scan


def test_mr_scales_by_a_robust_percentile_and_keeps_zero():
    mr = phantom() * 700
    mr[:, :3] = 0
    mr[0, 0, 0] = 1e6  # one hot voxel must not decide the scale
    norm = IntensityNormalizer.fit(mr, "mr")
    assert norm.offset == 0.0
    assert 500 < norm.scale < 800


@pytest.mark.parametrize("modality", ["ct", "mr", "us"])
def test_round_trip_is_exact_to_float_precision(modality):
    image = phantom(low=-1000, high=3000).astype(np.float64)
    norm = IntensityNormalizer.fit(image, modality)
    normalized = norm.normalize(image)
    back = norm.denormalize_(normalized)
    assert back is normalized and back.dtype == np.float32  # in place: the denoiser's output is not copied
    assert np.max(np.abs(back - image)) < 1e-3


def test_negative_values_shift_by_low_percentile_and_constant_is_safe():
    image = phantom(low=-5, high=5)
    norm = IntensityNormalizer.fit(image, "mr")
    assert norm.offset < 0 and norm.scale > 0
    const = IntensityNormalizer.fit(np.full((3, 4, 5), 7.0), "mr")
    assert const.scale > 0 and np.isfinite(const.normalize(np.full((3, 4, 5), 7.0))).all()


def test_guess_modality():
    assert guess_modality(phantom(low=-1024, high=1500)) == "ct"
    assert guess_modality(phantom(low=0, high=800)) == "mr"
    assert guess_modality(phantom(low=0, high=800), tagged="us") == "us"
    assert guess_modality(np.array([np.nan, np.inf])) == "mr"


def test_an_untagged_8_bit_image_is_ultrasound_and_a_tag_still_wins():
    frame = (phantom((1, 40, 50))[0] * 255).astype(np.uint8)
    assert guess_modality(frame) == "us"
    assert guess_modality(frame.astype(np.uint16)) == "mr"  # MR is stored in 12 to 16 bits
    assert guess_modality(frame, tagged="mr") == "mr"


def test_unknown_modality_is_refused():
    with pytest.raises(ValueError, match="ct, mr, us"):
        IntensityNormalizer.fit(phantom(), "pet")
