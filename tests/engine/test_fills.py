from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from faceaudit.engine.fills import VGGFACE_MEAN_RGB, baseline_image
from faceaudit.errors import InvalidRequest


@pytest.fixture
def image(rng):
    return rng.uniform(0, 255, (6, 5, 3)).astype(np.float32)


def test_fills(image):
    np.testing.assert_array_equal(baseline_image(image, "zero"), np.zeros_like(image))
    np.testing.assert_allclose(baseline_image(image, "mean")[2, 3], image.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(baseline_image(image, "dataset_mean")[0, 0], VGGFACE_MEAN_RGB, rtol=1e-6)
    np.testing.assert_array_equal(baseline_image(image, "constant", constant=(7.0,)), np.full_like(image, 7.0))
    np.testing.assert_array_equal(baseline_image(image, "constant", constant=(1, 2, 3))[4, 4], [1, 2, 3])
    blurred = baseline_image(image, "blur", blur_sigma=2.0)
    for c in range(3):
        np.testing.assert_allclose(blurred[..., c], gaussian_filter(image[..., c], 2.0, mode="nearest"), rtol=1e-5)
    assert baseline_image(image, "zero").shape == image.shape


@pytest.mark.parametrize(("fill", "kw", "field"), [
    ("grey", {}, "fill"), ("constant", {}, "constant"), ("constant", {"constant": (300.0,)}, "constant"),
    ("constant", {"constant": (1.0, 2.0)}, "constant"), ("blur", {"blur_sigma": 0.0}, "blur_sigma"),
    ("dataset_mean", {"dataset_mean": (1.0, float("nan"), 3.0)}, "dataset_mean"),
])
def test_bad_fill_options_name_the_option(image, fill, kw, field):
    with pytest.raises(InvalidRequest) as info:
        baseline_image(image, fill, **kw)
    assert info.value.field == field


def test_a_constant_without_the_constant_fill_is_refused(image):
    with pytest.raises(InvalidRequest) as info:
        baseline_image(image, "zero", constant=(128.0,))
    assert info.value.field == "constant"
