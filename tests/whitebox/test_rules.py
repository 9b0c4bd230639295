"""What distinguishes the four signals, on minimal graphs with hand-computed answers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.whitebox import backward, instrument_graph

from tests.whitebox import nets
from tests.whitebox.numerics import central_differences

# y = w2 · f(x) for x = (1, −1): the incoming signal at f's output is w2 = (−1, 2).
X, W2 = np.array([[1.0, -1.0]]), [[-1.0, 2.0]]


def _signal_through(activation: str, signal: str, **attrs: object) -> np.ndarray:
    n = nets.Net(0, np.float64)
    inputs = ["x", n.const([0.25, 0.5])] if activation == "PRelu" else ["x"]
    n.op("Gemm", [n.op(activation, inputs, **attrs), n.const(W2)], transB=1)
    wb = instrument_graph(n.model(["N", 2], 1), "x", "y")
    acts = wb.forward(X)
    return backward(wb.graph, acts.values, np.ones((1, 1)), signal)["x"]  # type: ignore[arg-type]


@pytest.mark.parametrize(("signal", "expected"), [
    ("gradient", [-1.0, 0.0]),    # gated by the forward input: x₂ < 0
    ("guided", [0.0, 0.0]),       # gated by the input and by the signal: −1 < 0
    ("deconv", [0.0, 2.0]),       # relu of the signal, whatever the input
])
def test_relu(signal, expected):
    np.testing.assert_array_equal(_signal_through("Relu", signal), [expected])


@pytest.mark.parametrize(("signal", "expected"), [
    ("gradient", [-1.0, 0.2]),
    ("guided", [0.0, 0.2]),
    ("deconv", [-0.1, 2.0]),  # LeakyRelu applied to the signal (−1, 2)
])
def test_leaky_relu(signal, expected):
    np.testing.assert_allclose(_signal_through("LeakyRelu", signal, alpha=0.1), [expected])


def test_prelu_slopes_per_feature():
    """Slopes (0.25, 0.5) broadcast over the rows: x₂ < 0 takes 0.5."""
    np.testing.assert_allclose(_signal_through("PRelu", "gradient"), [[-1.0, 1.0]])
    np.testing.assert_allclose(_signal_through("PRelu", "deconv"), [[-0.25, 2.0]])


@pytest.mark.parametrize(("low", "signal", "expected"), [
    (0.0, "gradient", [-1.0, 0.0]),
    (0.0, "guided", [0.0, 0.0]),
    (0.0, "deconv", [0.0, 2.0]),    # Clip(0, hi), ReLU6-style, is a rectifier
    (-2.0, "guided", [-1.0, 2.0]),  # Clip(−2, hi) is not: exact gradient
    (-2.0, "deconv", [-1.0, 2.0]),
])
def test_clip(low, signal, expected):
    n = nets.Net(0, np.float64)
    n.op("Gemm", [n.op("Clip", ["x", n.const(low), n.const(6.0)]), n.const(W2)], transB=1)
    wb = instrument_graph(n.model(["N", 2], 1), "x", "y")
    acts = wb.forward(X)
    np.testing.assert_array_equal(backward(wb.graph, acts.values, np.ones((1, 1)), signal)["x"], [expected])


def test_clip_bounds_as_attributes_before_opset_11():
    n = nets.Net(0)
    n.op("Clip", ["x"], min=-0.5, max=0.8)
    wb = instrument_graph(n.model(["N", 4], 4, opset=10), "x", "y")
    acts = wb.forward(np.array([[-1.0, -0.2, 0.5, 2.0]], dtype=np.float32))
    np.testing.assert_array_equal(backward(wb.graph, acts.values, np.ones((1, 4)), "gradient")["x"], [[0, 1, 1, 0]])


@pytest.mark.parametrize(("op", "extra"), [("Relu", ()), ("LeakyRelu", ()), ("PRelu", ([0.25, 0.5],)),
                                          ("Clip", (0.0, 6.0)), ("Sigmoid", ()), ("Softmax", ())])
def test_activations_pass_excitation_through_and_only_rectifiers_change_guided_and_deconv(op, extra):
    n = nets.Net(0, np.float64)
    n.op(op, ["x", *(n.const(value) for value in extra)])
    wb = instrument_graph(n.model(["N", 2], 2), "x", "y")
    acts = wb.forward(X)
    seed = np.array([[0.3, 0.7]])
    signals = {s: backward(wb.graph, acts.values, seed, s)["x"] for s in ("gradient", "guided", "deconv", "excitation")}
    np.testing.assert_array_equal(signals["excitation"], seed)  # whatever the sign of x
    assert not np.array_equal(signals["gradient"], seed)  # x₂ < 0, or a smooth function's slope
    if op in ("Sigmoid", "Softmax"):  # no rectifier: guided and deconv are the exact gradient
        np.testing.assert_array_equal(signals["guided"], signals["gradient"])
        np.testing.assert_array_equal(signals["deconv"], signals["gradient"])


def test_moves_with_attributes_before_opset_10_match_central_differences():
    """Slice (starts/ends/axes attributes), Pad (pads attribute), Split (split attribute) at opset 9."""
    n = nets.Net(0)
    n.nodes.append(onnx.helper.make_node("Split", ["x"], ["left", "right"], name="split", axis=1, split=[2, 4]))
    padded = n.op("Pad", ["left"], pads=[0, 1, 0, 2], value=0.25)  # (N, 5)
    both = n.op("Concat", [padded, n.op("Slice", ["right"], starts=[1], ends=[4], axes=[1])], axis=1)  # (N, 8)
    n.op("Gemm", [both, n.normal(3, 8, scale=1.0), n.normal(3)], transB=1)
    model = n.model(["N", 6], 3, opset=9)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (2, 6)).astype(np.float32)
    seed = np.random.default_rng(1).normal(size=(2, 3))
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    grad = backward(wb.graph, acts.values, seed, "gradient")["x"]
    estimate, _ = central_differences(model, x, seed, 1e-2)
    np.testing.assert_allclose(grad, estimate, atol=1e-3 * np.abs(grad).max())
    assert np.count_nonzero(grad[:, 2]) == 0  # the element the Slice drops gets nothing
