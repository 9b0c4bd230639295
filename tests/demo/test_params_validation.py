"""Bad renderer parameters are refused naming the field, never drawn into NaN landmarks or a traceback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from faceaudit.demo import FaceParams, render, sample_identity, sample_nuisance
from faceaudit.demo.params import Accessory, Eyes, Hair, Mouth, Nuisance, Skin
from faceaudit.errors import InvalidRequest


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Nuisance(rotation_deg=float("nan")), "rotation_deg"),
    (lambda: Nuisance(scale=0.0), "scale"),
    (lambda: Nuisance(noise_sigma=-1.0), "noise_sigma"),
    (lambda: Nuisance(shift=(float("inf"), 0.0)), "shift"),
    (lambda: Mouth(width=0.0), "width"),
    (lambda: Eyes(size=0.0), "size"),
    (lambda: Skin(chin=0.0), "chin"),
    (lambda: Hair(style="mohawk"), "style"),
    (lambda: Accessory(kind="hat"), "kind"),
])
def test_bad_parameters_name_the_field(make, field):
    with pytest.raises(InvalidRequest) as info:
        make()
    assert info.value.field == field


@pytest.mark.parametrize("size", [8, 4096, 64.0, True])
def test_render_size_is_bounded(size):
    params = FaceParams(sample_identity(np.random.default_rng(0)), sample_nuisance(np.random.default_rng(1)))
    with pytest.raises(InvalidRequest) as info:
        render(params, size)
    assert info.value.field == "size"


def test_numpy_integer_sizes_are_accepted():
    params = FaceParams(sample_identity(np.random.default_rng(0)), dataclasses.replace(Nuisance()))
    assert render(params, np.int64(32)).image.shape == (32, 32, 3)
