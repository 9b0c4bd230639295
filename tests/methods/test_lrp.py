"""LRP: conservation on a bias-free ReLU network, α1β0 = score × excitation on non-negative inputs, closed forms."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradient import instrument_for
from faceaudit.methods.lrp import LrpOptions, lrp
from faceaudit.testing import zoo
from faceaudit.whitebox import backward

from tests.conftest import prepared
from tests.whitebox import nets


def bias_free_relu_net(seed: int = 0) -> onnx.ModelProto:
    """(N, 3, 8, 8) → (N, 4): Conv, Relu, MaxPool, Conv, Relu, GlobalAveragePool, Flatten, Gemm; no biases."""
    n = nets.Net(seed)
    x = n.op("Relu", [n.op("Conv", ["x", n.normal(6, 3, 3, 3)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    x = n.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = n.op("Relu", [n.op("Conv", [x, n.normal(5, 6, 3, 3)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
    n.op("Gemm", [n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1), n.normal(4, 5)], transB=1)
    return n.model(["N", 3, 8, 8], 4)


SPEC = {"kind": "classifier", "input_name": "x", "output_name": "y", "softmax": False}


@pytest.mark.parametrize("rule", ["epsilon", "alpha_beta"])
def test_relevance_is_conserved_on_a_bias_free_relu_network(rule):
    model = prepared(bias_free_relu_net(), SPEC)
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    checked = 0
    for k in range(4):
        result = lrp(model, image=image, target=ExplainTarget(class_index=k), options=LrpOptions(rule=rule, epsilon=1e-12))
        out = result.extra["relevance_out"]
        if rule == "alpha_beta" and out <= 0:
            continue  # α1β0 redistributes positive evidence: a negative score has none to send down
        assert float(result.values.sum()) == pytest.approx(out, rel=1e-6)
        assert result.extra["relevance_in"] == pytest.approx(out, rel=1e-6)
        checked += 1
    assert checked >= 2


def test_alpha_beta_is_the_score_times_excitation_on_non_negative_inputs():
    """On x ≥ 0 both rules are x ⊙ W⁺ᵀ(R ⊘ W⁺x) at every layer; only the start differs (s vs 1)."""
    model = prepared(zoo.vgg_classifier(height=16, width=16), {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    target = ExplainTarget(class_index=2)
    wb = instrument_for(model, target)
    acts = wb.forward(to_model_input(image[None], model.spec))
    excitation = backward(wb.graph, acts.values, wb.seed(acts.values, "excitation", 2), "excitation")
    result = lrp(model, image=image, target=target, options=LrpOptions(rule="alpha_beta"))
    score = result.extra["relevance_out"]
    expected = score * excitation[wb.graph.input_name][0].sum(axis=0)  # NCHW: channels summed
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-9 * abs(score))


def _linear_weights(model) -> tuple[np.ndarray, np.ndarray]:
    tensors = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in model.loaded.proto.graph.initializer}
    return tensors["W"], tensors["b"]


def test_epsilon_rule_on_one_dense_layer_by_hand():
    """z = W x + b: R_x = x ⊙ w_k · z_k / (z_k + ε sign z_k); the bias keeps b_k z_k / (z_k + ε) for itself."""
    model = prepared(zoo.linear_classifier(height=4, width=4), {"kind": "classifier", "softmax": False})
    w, b = _linear_weights(model)
    image = np.random.default_rng(2).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    x = (image / 255.0).transpose(2, 0, 1).reshape(-1).astype(np.float64)
    for k in range(3):
        z = w[k] @ x + b[k]
        eps = 0.5
        expected = (x * w[k] * z / (z + eps * np.sign(z))).reshape(3, 4, 4).sum(axis=0)
        result = lrp(model, image=image, target=ExplainTarget(class_index=k), options=LrpOptions(epsilon=eps))
        np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-9)


def test_alpha_beta_keeps_negative_inputs_through_negative_weights():
    """Mean-subtracted inputs: R_x = (x w)⁺ · z / Σ(x w)⁺ — a negative x with a negative w gets relevance."""
    spec = {"kind": "classifier", "softmax": False, "scale": 1.0, "mean": [127.5], "std": [127.5]}
    model = prepared(zoo.linear_classifier(height=4, width=4), spec)
    w, b = _linear_weights(model)
    image = np.random.default_rng(3).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    x = ((image - 127.5) / 127.5).transpose(2, 0, 1).reshape(-1).astype(np.float64)
    k = 1
    z = w[k] @ x + b[k]
    positive = np.maximum(x * w[k], 0.0)
    expected = (positive * z / positive.sum()).reshape(3, 4, 4).sum(axis=0)
    result = lrp(model, image=image, target=ExplainTarget(class_index=k), options=LrpOptions(rule="alpha_beta"))
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-9)
    assert ((x < 0) & (w[k] < 0)).any()


def test_embedding_relevance_and_options():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    probe, mate, non_mate = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    alone = lrp(model, image=probe, target=ExplainTarget(mate=mate))
    both = lrp(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate))
    assert alone.signed and not np.allclose(alone.values, both.values)
    for options, name in ((dict(rule="z_plus"), "rule"), (dict(epsilon=-1.0), "epsilon"),
                          (dict(epsilon=float("nan")), "epsilon")):
        with pytest.raises(InvalidRequest) as info:
            LrpOptions(**options)
        assert info.value.field == name
