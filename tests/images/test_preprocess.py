"""Tests of faceaudit.images.preprocess.to_model_input against a numpy reference written here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceaudit.errors import InvalidRequest, SpecAmbiguous
from faceaudit.images.preprocess import to_model_input
from faceaudit.models.spec import ModelSpec

H, W, B = 8, 6, 3
BASE: dict[str, Any] = {
    "height": H, "width": W, "layout": "NCHW", "channels": 3, "channel_order": "RGB",
    "scale": 1.0, "mean": [1, 2, 3], "std": [2, 4, 8],
}
GREY = {"channels": 1, "mean": [5], "std": [2]}


def make_spec(**overrides: Any) -> ModelSpec:
    values = {**BASE, **overrides}
    return ModelSpec().with_values({k: v for k, v in values.items() if v is not None})


def reference(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(pixel[channel_order] * scale - mean) / std, luma for one channel, in the spec's layout."""
    x = images.astype(np.float64)
    if spec.channels == 1:
        x = (x * np.array([0.299, 0.587, 0.114])).sum(axis=-1, keepdims=True)
    elif spec.channel_order == "BGR":
        x = x[..., [2, 1, 0]]
    mean = np.broadcast_to(np.array(spec.mean, dtype=np.float64), (spec.channels,))
    std = np.broadcast_to(np.array(spec.std, dtype=np.float64), (spec.channels,))
    x = (x * spec.scale - mean) / std
    return x.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else x


@pytest.fixture
def batch(faces) -> np.ndarray:
    return faces(B, H, W)


SPECS = {
    "nchw_rgb": {},
    "nhwc_rgb": {"layout": "NHWC"},
    "nchw_bgr": {"channel_order": "BGR"},
    "nhwc_bgr": {"layout": "NHWC", "channel_order": "BGR"},
    "nchw_grey": {**GREY},
    "nhwc_grey": {**GREY, "layout": "NHWC"},
    "scalar_mean_std": {"mean": 127.5, "std": 128.0},
    "scale_and_per_channel": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "assumed_defaults": {"scale": None, "mean": None, "std": None},
}


def expected_shape(spec: ModelSpec, batch: int) -> tuple[int, ...]:
    c = spec.channels
    return (batch, c, H, W) if spec.layout == "NCHW" else (batch, H, W, c)


@pytest.mark.parametrize("overrides", SPECS.values(), ids=SPECS.keys())
def test_to_model_input_matches_reference(batch: np.ndarray, overrides: dict[str, Any]) -> None:
    spec = make_spec(**overrides)

    result = to_model_input(batch, spec)

    assert result.dtype == np.float32 and result.shape == expected_shape(spec, B)
    np.testing.assert_allclose(result, reference(batch, spec), rtol=1e-5, atol=1e-4)


def test_to_model_input_bgr_puts_blue_first(batch: np.ndarray) -> None:
    spec = make_spec(channel_order="BGR", mean=0, std=1)

    result = to_model_input(batch, spec)

    for model_channel, rgb_channel in enumerate([2, 1, 0]):
        np.testing.assert_allclose(result[:, model_channel], batch[..., rgb_channel], rtol=1e-6)


def test_to_model_input_greyscale_agrees_with_pillow_luma(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    pillow_grey = np.asarray(Image.fromarray(image).convert("L"), dtype=np.float64)
    spec = make_spec(channels=1, scale=1.0, mean=0, std=1)

    result = to_model_input(image[None].astype(np.float32), spec)

    assert result.shape == (1, 1, H, W)
    np.testing.assert_allclose(result[0, 0], pillow_grey, rtol=0, atol=0.5)


@pytest.mark.parametrize("overrides", [{}, {"layout": "NHWC"}, GREY, {**GREY, "layout": "NHWC"}],
                         ids=["nchw_rgb", "nhwc_rgb", "nchw_grey", "nhwc_grey"])
def test_to_model_input_writes_into_given_buffer(batch: np.ndarray, overrides: dict[str, Any]) -> None:
    spec = make_spec(**overrides)
    out = np.full(expected_shape(spec, B), np.nan, dtype=np.float32)

    result = to_model_input(batch, spec, out=out)

    assert result is out
    np.testing.assert_allclose(out, reference(batch, spec), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("overrides", [{}, {"layout": "NHWC"}, GREY], ids=["nchw_rgb", "nhwc_rgb", "nchw_grey"])
def test_to_model_input_writes_into_slice_of_bigger_buffer(batch: np.ndarray, overrides: dict[str, Any]) -> None:
    spec = make_spec(**overrides)
    buffer = np.full(expected_shape(spec, B + 4), -7.0, dtype=np.float32)
    window = buffer[2:5]

    result = to_model_input(batch, spec, out=window)

    assert result is window
    np.testing.assert_allclose(buffer[2:5], reference(batch, spec), rtol=1e-5, atol=1e-4)
    assert (buffer[:2] == -7.0).all() and (buffer[5:] == -7.0).all()


@pytest.mark.parametrize("overrides", [{}, {"channel_order": "BGR", "layout": "NHWC"}, GREY],
                         ids=["nchw_rgb", "nhwc_bgr", "nchw_grey"])
def test_to_model_input_uint8_batch_equals_its_float32_version(
    rng: np.random.Generator, overrides: dict[str, Any]
) -> None:
    spec = make_spec(**overrides)
    images = rng.integers(0, 256, size=(B, H, W, 3), dtype=np.uint8)

    from_uint8 = to_model_input(images, spec)

    assert from_uint8.dtype == np.float32
    np.testing.assert_allclose(from_uint8, reference(images.astype(np.float32), spec), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(from_uint8, to_model_input(images.astype(np.float32), spec), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape", [(1, W, H, 3), (1, H, W, 1), (1, H, W, 4), (H, W, 3), (1, H + 1, W, 3)],
    ids=["height_width_swapped", "one_channel", "four_channels", "no_batch_axis", "taller"],
)
def test_to_model_input_wrong_image_shape_raises_invalid_request(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_model_input(np.zeros(shape, dtype=np.float32), make_spec())

    assert caught.value.field == "images" and "images" in str(caught.value)


def test_to_model_input_without_height_raises_spec_ambiguous(batch: np.ndarray) -> None:
    with pytest.raises(SpecAmbiguous) as caught:
        to_model_input(batch, make_spec(height=None))

    assert caught.value.field == "height"
    assert "--size" in caught.value.flag and "--size" in str(caught.value) and "height" in str(caught.value)


@pytest.mark.parametrize("with_out", [False, True], ids=["no_out", "with_out"])
def test_to_model_input_without_layout_raises_spec_ambiguous(batch: np.ndarray, with_out: bool) -> None:
    # A caller's buffer must not let an unknown layout pass silently as NHWC.
    out = np.empty((B, H, W, 3), dtype=np.float32) if with_out else None

    with pytest.raises(SpecAmbiguous) as caught:
        to_model_input(batch, make_spec(layout=None), out=out)

    assert caught.value.field == "layout" and "--layout" in str(caught.value)
