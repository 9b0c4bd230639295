"""Excitation backprop: mass conservation layer by layer, closed forms, the residual split, winner takes all."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.whitebox import backward, instrument_graph

from tests.whitebox import nets


def _trace(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray, signal: str = "excitation"
           ) -> dict[str, np.ndarray]:
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    return backward(wb.graph, acts.values, seed, signal, trace=True)  # type: ignore[arg-type]


def _mass(signal: np.ndarray) -> np.ndarray:
    return signal.reshape(len(signal), -1).sum(axis=1)


@pytest.mark.parametrize("model_seed", [0, 1])
def test_mass_is_conserved_at_every_layer_of_a_relu_network(model_seed):
    """Positive inputs, ReLU activations: every tensor of the chain holds probability mass 1 per image."""
    model = nets.relu_net(model_seed)
    x = np.random.default_rng(model_seed).uniform(0.0, 1.0, (3, 3, 12, 12)).astype(np.float32)
    seed = np.eye(4)[[0, 2, 3]]  # a different target class per image
    signals = _trace(model, x, seed)
    assert len(signals) == len(model.graph.node) + 1  # every node's output and the input
    for name, signal in signals.items():
        np.testing.assert_allclose(_mass(signal), 1.0, atol=1e-9, err_msg=name)
        assert signal.min() >= 0.0, name


def test_residual_add_splits_the_mass_between_its_inputs():
    """The block's input feeds the skip and the branch: with the split it receives mass 1, not 1 + branch share."""
    model = nets.relu_net(0, residual=True)
    x = np.random.default_rng(2).uniform(0.0, 1.0, (2, 3, 12, 12)).astype(np.float32)
    signals = _trace(model, x, np.eye(4)[[1, 1]])
    add = next(node for node in model.graph.node if node.op_type == "Add")
    block_input, branch = add.input
    np.testing.assert_allclose(_mass(signals[add.output[0]]), 1.0, atol=1e-9)
    assert _mass(signals[branch]).min() > 0.05 and _mass(signals[branch]).max() < 0.95  # both paths get a share
    np.testing.assert_allclose(_mass(signals[block_input]), 1.0, atol=1e-9)  # skip share + branch share
    np.testing.assert_allclose(_mass(signals["x"]), 1.0, atol=1e-9)


def test_residual_split_in_proportion_to_the_positive_parts():
    """p = (1, 1) at a + b with a = (1, 3), b = (3, −1): p_a = (1/4, 1), p_b = (3/4, 0)."""
    n = nets.Net(0, np.float64)
    a = n.op("Identity", ["x"])
    b = n.op("Mul", ["x", n.const([3.0, -1.0 / 3.0])])
    n.op("Add", [a, b])
    signals = _trace(n.model(["N", 2], 2), np.array([[1.0, 3.0]]), np.ones((1, 2)))
    np.testing.assert_allclose(signals[a], [[0.25, 1.0]])
    np.testing.assert_allclose(signals[b], [[0.75, 0.0]])
    # Into x: through Identity p_a; through Mul by c, only c⁺ = (3, 0) excites: x·c⁺·p_b/(c⁺x) = (3/4, 0).
    np.testing.assert_allclose(signals["x"], [[1.0, 1.0]])


def test_one_layer_closed_form():
    """y = W x, W = [[1, −2, 3]], x = (2, 5, 1): p = x ⊙ W⁺ / (W⁺ · x) = (2, 0, 3) / 5."""
    n = nets.Net(0, np.float64)
    n.op("Gemm", ["x", n.const([[1.0, -2.0, 3.0]])], transB=1)
    signals = _trace(n.model(["N", 3], 1), np.array([[2.0, 5.0, 1.0]]), np.ones((1, 1)))
    np.testing.assert_allclose(signals["x"], [[0.4, 0.0, 0.6]])


def test_two_layers_against_the_papers_conditional_probabilities():
    """P(a_j) = Σ_i P(a_j | a_i) P(a_i), P(a_j | a_i) = Z_i â_j w⁺_ji (Wang et al. 2025 eqs. 1–2), by hand."""
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.normal(size=(5, 4)), rng.normal(0.5, 0.2, 5), rng.normal(size=(3, 5))
    n = nets.Net(0, np.float64)
    hidden = n.op("Relu", [n.op("Gemm", ["x", n.const(w1), n.const(b1)], transB=1)])
    n.op("Gemm", [hidden, n.const(w2)], transB=1)
    x = rng.uniform(0.1, 1.0, (1, 4))
    target = 2
    signals = _trace(n.model(["N", 4], 3), x, np.eye(3)[[target]])

    def conditional(weights: np.ndarray, below: np.ndarray) -> np.ndarray:
        """[i, j] = P(a_j | a_i) for parents i (rows of weights) and children j with responses `below`."""
        excitation = np.maximum(weights, 0.0) * below[None, :]
        total = excitation.sum(axis=1, keepdims=True)
        return np.divide(excitation, total, out=np.zeros_like(excitation), where=total > 0)  # Z_i := 0 if no excitation

    h = np.maximum(w1 @ x[0] + b1, 0.0)
    p_hidden = np.eye(3)[target] @ conditional(w2, h)
    p_input = p_hidden @ conditional(w1, x[0])
    assert 0 < np.count_nonzero(h) < 5 and np.count_nonzero(p_hidden) >= 2  # Relu and W⁺ both matter here
    np.testing.assert_allclose(signals[hidden][0], p_hidden, atol=1e-12)
    np.testing.assert_allclose(signals["x"][0], p_input, atol=1e-12)


@pytest.mark.parametrize("signal", ["gradient", "excitation"])
def test_max_pool_gives_each_window_to_its_winner(signal):
    n = nets.Net(0, np.float64)
    n.op("Flatten", [n.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], axis=1)
    x = np.array([[[[1, 5, 0, 2], [3, 4, 9, 1], [7, 7, 0, 0], [6, 2, 0, 8]]]], dtype=np.float64)
    seed = np.array([[1.0, 2.0, 3.0, 4.0]])
    signals = _trace(n.model(["N", 1, 4, 4], 4), x, seed, signal)
    expected = np.zeros((1, 1, 4, 4))
    expected[0, 0, 0, 1], expected[0, 0, 1, 2], expected[0, 0, 2, 0], expected[0, 0, 3, 3] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(signals["x"], expected)  # the tie 7, 7 goes to the first


def test_excitation_at_a_layer_equals_the_full_walk_there():
    model = nets.relu_net(1, residual=True)
    x = np.random.default_rng(3).uniform(0.0, 1.0, (1, 3, 12, 12)).astype(np.float32)
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    seed = np.eye(4)[[3]]
    full = backward(wb.graph, acts.values, seed, "excitation", trace=True)
    add = next(node.output[0] for node in model.graph.node if node.op_type == "Add")
    # The residual branch does not pass through the Add's skip input: its share is part of the layer's mass.
    np.testing.assert_allclose(backward(wb.graph, acts.values, seed, "excitation", source=add)[add], full[add])


def _single(op_builder, x: np.ndarray, seed: np.ndarray, shape: list, outputs: int, signal: str = "excitation"):
    n = nets.Net(0, np.float64)
    op_builder(n)
    return _trace(n.model(["N", *shape], outputs), x, seed, signal)


@pytest.mark.parametrize("signal", ["gradient", "guided", "deconv", "excitation"])
def test_max_feature_map_gives_each_element_to_its_winner(signal):
    """LightCNN's MFM: Max of the two channel halves; every signal goes to the larger half (first on ties)."""
    def build(n):
        a, b = (n.op("Slice", ["x", n.ints([lo]), n.ints([hi]), n.ints([1])]) for lo, hi in ((0, 2), (2, 4)))
        n.op("Max", [a, b])
    x = np.array([[1.0, 5.0, 3.0, 5.0]])
    signals = _single(build, x, np.array([[0.3, 0.7]]), [4], 2, signal)
    np.testing.assert_array_equal(signals["x"], [[0.0, 0.7, 0.3, 0.0]])


def test_squeeze_excitation_gate_passes_all_mass_to_the_gated_path():
    """y = x ⊙ σ(w · mean(x)): the gate branch gets p = 0, the activation path all of p (mass conserved)."""
    n = nets.Net(0, np.float64)
    squeezed = n.op("ReduceMean", ["x"], axes=[2, 3], keepdims=1)
    gate = n.op("Sigmoid", [n.op("Mul", [squeezed, n.const([[[0.5]], [[-2.0]]])])])
    n.op("Flatten", [n.op("Mul", ["x", gate])], axis=1)
    x = np.random.default_rng(0).uniform(0.1, 1.0, (2, 2, 3, 3))
    seed = np.random.default_rng(1).uniform(0.0, 1.0, (2, 18))
    signals = _trace(n.model(["N", 2, 3, 3], 18), x, seed)
    np.testing.assert_array_equal(signals[gate], 0.0)
    np.testing.assert_allclose(signals["x"].reshape(2, -1), seed)
    gradient = _trace(n.model(["N", 2, 3, 3], 18), x, seed, "gradient")
    assert np.abs(gradient[gate]).max() > 0  # the product rule sends the gradient into the gate too


def test_reduce_mean_and_moves_conserve_mass_on_non_negative_inputs():
    """Concat, Split, Pad, Slice, ReduceMean, Cast: each passes all mass that reaches a kept element."""
    def build(n):
        both = n.op("Concat", ["x", n.op("Mul", ["x", n.const(2.0)])], axis=1)  # (N, 8)
        n.nodes.append(onnx.helper.make_node("Split", [both, n.ints([3, 5])], ["s0", "s1"], name="split", axis=1))
        padded = n.op("Pad", ["s1", n.ints([0, 2, 0, 1]), n.const(0.0)])  # (N, 8)
        sliced = n.op("Slice", [padded, n.ints([2]), n.ints([7]), n.ints([1])])  # the 5 values of s1
        mean = n.op("ReduceMean", [n.op("Reshape", [n.op("Cast", [sliced], to=onnx.TensorProto.DOUBLE),
                                                     n.ints([0, 5, 1])])], axes=[2], keepdims=0)
        n.op("Concat", [mean, n.op("ReduceMean", ["s0"], axes=[1], keepdims=1)], axis=1)  # (N, 6)
    x = np.random.default_rng(2).uniform(0.1, 1.0, (2, 4))
    seed = np.random.default_rng(3).uniform(0.0, 1.0, (2, 6))
    signals = _single(build, x, seed, [4], 6)
    np.testing.assert_allclose(_mass(signals["x"]), seed.sum(axis=1))
    assert signals["x"].min() >= 0


def test_embedding_normalisation_by_reduce_l2_passes_p_like_lp_normalization():
    def head(n, normalise):
        e = n.op("Gemm", ["x", n.const(np.arange(12.0).reshape(3, 4) / 10)])
        normalise(n, e)
    x = np.array([[0.5, 1.0, 0.2]])
    seed = np.array([[0.1, 0.2, 0.3, 0.4]])
    by_div = _single(lambda n: head(n, lambda n, e: n.op("Div", [e, n.op("ReduceL2", [e], axes=[1], keepdims=1)])),
                     x, seed, [3], 4)
    by_lp = _single(lambda n: head(n, lambda n, e: n.op("LpNormalization", [e], axis=1, p=2)), x, seed, [3], 4)
    np.testing.assert_allclose(by_div["x"], by_lp["x"])
    np.testing.assert_allclose(_mass(by_div["x"]), 1.0)


def test_sub_of_two_tensors_excites_only_the_minuend():
    n = nets.Net(0, np.float64)
    a = n.op("Identity", ["x"])
    b = n.op("Mul", ["x", n.const(0.5)])
    n.op("Sub", [a, b])
    signals = _trace(n.model(["N", 2], 2), np.array([[1.0, 2.0]]), np.array([[0.25, 0.75]]))
    np.testing.assert_allclose(signals[a], [[0.25, 0.75]])
    np.testing.assert_array_equal(signals[b], 0.0)


@pytest.mark.parametrize("signal", ["excitation", "extended"])
@pytest.mark.parametrize("build", [lambda: nets.conv_net(0), lambda: nets.relu_net(1, residual=True),
                                   lambda: nets.block_net(0)], ids=["conv_net", "relu_net_residual", "block_net"])
def test_excitation_is_linear_in_its_seed(build, signal):
    """With the activations fixed, the signal of a − b is the signal of a minus that of b: what lets cEBP
    take one backward pass from the seed target − contrast (methods.cebp.compiled_difference). Signed
    inputs, so eEBP's negative streams are exercised too."""
    model = build()
    wb = instrument_graph(model, "x", "y")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    rng = np.random.default_rng(4)
    dtype = np.float64 if model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE else np.float32
    acts = wb.forward(rng.normal(size=(2, *shape)).astype(dtype))
    width = acts.values["y"].shape[1]
    a, b = np.eye(width)[[0, 1]], np.full((2, width), 1.0 / width)
    signals = [backward(wb.graph, acts.values, seed, signal)["x"] for seed in (a, b, a - b)]  # type: ignore[arg-type]
    assert np.abs(signals[0] - signals[1]).max() > 0  # the two seeds differ where it is read
    np.testing.assert_allclose(signals[2], signals[0] - signals[1], rtol=0, atol=1e-12 * np.abs(signals[0]).max())
