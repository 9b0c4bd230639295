"""Deconvnet in closed form on a one-hidden-layer ReLU network."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.deconvnet import DeconvnetOptions, deconvnet
from faceaudit.methods.gradient import gradient
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_guided_backprop import mlp_case, to_pixel_map


@pytest.mark.parametrize("seed", [0, 1])
def test_deconvnet_closed_form(seed):
    """R_x = W1ᵀ relu(w), w = W2ᵀ e_k: the rectifier acts on the signal; the forward input plays no part."""
    model, image, weights, _ = mlp_case(seed)
    k = 1
    expected = to_pixel_map(weights["W1"].T @ np.maximum(weights["W2"][k], 0.0))
    result = deconvnet(model, image=image, target=ExplainTarget(class_index=k))
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-9 * expected.max())
    other_image = np.random.default_rng(9).uniform(0, 255, image.shape).astype(np.float32)
    np.testing.assert_allclose(deconvnet(model, image=other_image, target=ExplainTarget(class_index=k)).values,
                               result.values, rtol=1e-5)  # on one hidden layer, independent of the image


def test_without_rectifiers_deconvnet_is_the_gradient():
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    image, mate = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    target = ExplainTarget(mate=mate)
    np.testing.assert_array_equal(deconvnet(model, image=image, target=target).values,
                                  gradient(model, image=image, target=target).values)


def test_reduce_is_validated():
    with pytest.raises(InvalidRequest) as info:
        DeconvnetOptions(reduce=3)  # type: ignore[arg-type]
    assert info.value.field == "reduce"
