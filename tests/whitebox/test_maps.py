"""Pixel-space gradients (the adjoint of preprocessing), channel views, bilinear upsampling, smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.images.preprocess import to_model_input
from faceaudit.models.spec import ModelSpec
from faceaudit.whitebox.maps import channels_first, pixel_gradient, smooth_and_normalise, upsample_bilinear


@pytest.mark.parametrize("values", [
    {"layout": "NCHW", "channels": 3},
    {"layout": "NHWC", "channels": 3, "channel_order": "BGR", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25]},
    {"layout": "NCHW", "channels": 1, "scale": 1.0, "mean": [127.5], "std": [128.0]},
])
def test_pixel_gradient_is_the_adjoint_of_preprocessing(values):
    """⟨pixel_gradient(g), δ⟩ = ⟨g, x(I + δ) − x(I)⟩: preprocessing is affine per pixel."""
    spec = ModelSpec(kind="classifier", input_name="input", height=5, width=4).with_values(values)
    rng = np.random.default_rng(0)
    image, delta = rng.uniform(0, 255, (2, 5, 4, 3)), rng.normal(size=(2, 5, 4, 3))
    grad = rng.normal(size=to_model_input(image.astype(np.float32), spec).shape)
    change = to_model_input(image + delta, spec).astype(np.float64) - to_model_input(image, spec)
    np.testing.assert_allclose((pixel_gradient(grad, spec) * delta).sum(), (grad * change).sum(), rtol=1e-4)


def test_channels_first_reads_the_input_by_layout_and_refuses_vectors():
    tensor = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert channels_first(tensor, is_input=True, layout="NHWC").shape == (2, 5, 3, 4)
    assert channels_first(tensor, is_input=False, layout="NHWC").shape == (2, 3, 4, 5)
    with pytest.raises(InvalidRequest) as info:
        channels_first(np.zeros((2, 8)), is_input=False, layout="NCHW")
    assert info.value.field == "layer"


def test_bilinear_upsampling_uses_half_pixel_centres():
    """PyTorch F.interpolate(mode="bilinear", align_corners=False) gives these values for [[0, 1], [2, 3]]."""
    expected = [[0.0, 0.25, 0.75, 1.0], [0.5, 0.75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2.0, 2.25, 2.75, 3.0]]
    np.testing.assert_allclose(upsample_bilinear(np.array([[0.0, 1.0], [2.0, 3.0]]), (4, 4)), expected)
    same = np.random.default_rng(1).normal(size=(3, 5))
    assert upsample_bilinear(same, (3, 5)) is same


def test_smoothing_keeps_unit_mass_and_refuses_an_empty_map():
    spike = np.zeros((9, 9))
    spike[4, 4] = 3.0
    smoothed = smooth_and_normalise(spike, 1.5)
    assert smoothed.sum() == pytest.approx(1.0) and smoothed[4, 4] < 0.2 and smoothed[4, 5] > 0
    np.testing.assert_array_equal(smooth_and_normalise(spike, 0.0), spike / 3.0)
    with pytest.raises(ModelOutputError, match="lost all probability mass"):
        smooth_and_normalise(np.zeros((4, 4)), 1.0)
