"""Guided backpropagation in closed form on a one-hidden-layer ReLU network."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradient import gradient
from faceaudit.methods.guided_backprop import GuidedBackpropOptions, guided_backprop
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.whitebox import nets


def mlp_case(seed: int = 0) -> tuple[object, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The prepared MLP, an image, its weights, and the hidden pre-activations z = W1 x + b1."""
    proto = nets.mlp_classifier(seed)
    weights = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    model = prepared(proto, {"kind": "classifier", "input_name": "x", "output_name": "y"})
    image = np.random.default_rng(seed).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    x = (image.astype(np.float64) / 255.0).transpose(2, 0, 1).reshape(-1)
    return model, image, weights, weights["W1"] @ x + weights["b1"]


def to_pixel_map(signal_at_x: np.ndarray) -> np.ndarray:
    """max over channels of |∂/∂pixel|, with ∂x/∂pixel = 1/255 under the assumed spec."""
    return np.abs(signal_at_x.reshape(3, 8, 8).transpose(1, 2, 0) / 255.0).max(axis=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_guided_backprop_closed_form(seed):
    """R_x = W1ᵀ ([z > 0] ⊙ [w > 0] ⊙ w), w = W2ᵀ e_k: gated by the forward input and by the signal."""
    model, image, weights, z = mlp_case(seed)
    k = 3
    w = weights["W2"][k]
    expected = to_pixel_map(weights["W1"].T @ ((z > 0) * (w > 0) * w))
    result = guided_backprop(model, image=image, target=ExplainTarget(class_index=k))
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-9 * expected.max())
    plain = gradient(model, image=image, target=ExplainTarget(class_index=k)).values
    assert not np.allclose(result.values, plain)  # the signal gate matters on this network


def test_without_rectifiers_guided_backprop_is_the_gradient():
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(3).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    target = ExplainTarget(class_index=0)
    np.testing.assert_array_equal(guided_backprop(model, image=image, target=target).values,
                                  gradient(model, image=image, target=target).values)


def test_reduce_is_validated():
    with pytest.raises(InvalidRequest) as info:
        GuidedBackpropOptions(reduce="mean")
    assert info.value.field == "reduce"
