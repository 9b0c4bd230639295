"""Extended excitation backprop (eEBP, Wang et al. 2025 §2.2 eqs. 3–4): closed forms with negative
activations, equality with EBP on ReLU networks, mass conservation, and gweEBP's response override."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.whitebox import backward, instrument_graph
from faceaudit.whitebox.instrument import fold_batch_norms

from tests.whitebox import nets


def _trace(model, x, seed, signal="extended", **kwargs):
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    return backward(wb.graph, acts.values, seed, signal, trace=True, **kwargs)


def _mass(signal: np.ndarray) -> np.ndarray:
    return signal.reshape(len(signal), -1).sum(axis=1)


def test_one_layer_closed_form_with_negative_activations():
    """y = W x, x = (2, −1, −1), W = [[1, −2, 3], [−1, 1, 2]]: y = (1, −5), worked by eqs. 3–4.

    Row 1, y₁ = 1 ≥ 0 (Θ⁺, eq. 3): excitatory x₁w⁺ = 2 and x₂w⁻ = (−1)(−2) = 2; x₃ has w > 0, w⁻ = 0.
        1/Z₁⁺ = 4, P(x | y₁) = (2, 2, 0)/4.
    Row 2, y₂ = −5 < 0 (Θ⁻, eq. 4): x₁w⁻ = 2·(−1) = −2, x₂w⁺ = (−1)·1 = −1, x₃w⁺ = (−1)·2 = −2.
        1/Z₂⁻ = −5, P(x | y₂) = (2, 1, 2)/5.
    Seed (1, 1): P(x) = (0.5 + 0.4, 0.5 + 0.2, 0 + 0.4) = (0.9, 0.7, 0.4), mass 2.
    EBP instead weighs x by W⁺ = [[1, 0, 3], [0, 1, 2]] whatever its sign: W⁺x = (−1, −3),
    (2, 0, −3)/(−1) + (0, −1, −2)/(−3) = (−2, 1/3, 11/3): a negative "probability".
    """
    n = nets.Net(0, np.float64)
    n.op("Gemm", ["x", n.const([[1.0, -2.0, 3.0], [-1.0, 1.0, 2.0]])], transB=1)
    model, x = n.model(["N", 3], 2), np.array([[2.0, -1.0, -1.0]])
    np.testing.assert_allclose(_trace(model, x, np.ones((1, 2)))["x"], [[0.9, 0.7, 0.4]])
    np.testing.assert_allclose(_trace(model, x, np.ones((1, 2)), "excitation")["x"], [[-2.0, 1 / 3, 11 / 3]])


def test_the_parents_sign_includes_the_layers_bias():
    """y = w·x + b with w = (1, −1), x = (1, 2): w·x = −1, and b = 3 makes y = 2 a pos-neuron: its only
    excitatory input is x₁ (w⁺x⁺), P = (1, 0). Without the bias y = −1 is a neg-neuron: x₂ (w⁻x⁺), P = (0, 1)."""
    for bias, expected in ((3.0, [[1.0, 0.0]]), (0.0, [[0.0, 1.0]])):
        n = nets.Net(0, np.float64)
        n.op("Gemm", ["x", n.const([[1.0, -1.0]]), n.const([bias])], transB=1)
        np.testing.assert_allclose(_trace(n.model(["N", 2], 1), np.array([[1.0, 2.0]]), np.ones((1, 1)))["x"],
                                   expected)


def test_a_shift_is_no_neuron():
    """x − c (input normalisation) makes x = 1 negative with c = 2; eEBP passes p through the shift
    (the elementwise sign is c·x's), where the response's sign would lose it."""
    n = nets.Net(0, np.float64)
    n.op("Sub", [n.op("Gemm", ["x", n.const([[1.0, 1.0]])], transB=1), n.const([2.0])])
    np.testing.assert_allclose(_trace(n.model(["N", 2], 1), np.array([[0.25, 0.75]]), np.ones((1, 1)))["x"],
                               [[0.25, 0.75]])


def test_residual_sum_with_negative_parts():
    """a = (1, −3), b = (3, −1), y = a + b = (4, −4), p = (1, 1): y₁ ≥ 0 split by a⁺, b⁺ = 1 : 3;
    y₂ < 0 split by a⁻, b⁻ = −3 : −1. p_a = (1/4, 3/4), p_b = (3/4, 1/4)."""
    n = nets.Net(0, np.float64)
    a = n.op("Identity", ["x"])
    b = n.op("Mul", ["x", n.const([3.0, 1.0 / 3.0])])
    n.op("Add", [a, b])
    signals = _trace(n.model(["N", 2], 2), np.array([[1.0, -3.0]]), np.ones((1, 2)))
    np.testing.assert_allclose(signals[a], [[0.25, 0.75]])
    np.testing.assert_allclose(signals[b], [[0.75, 0.25]])
    np.testing.assert_allclose(signals["x"], [[1.0, 1.0]])  # the positive scale 3, 1/3 passes p


def test_difference_with_negative_parts():
    """y = a − b, a = (2, −1), b = (−2, 1): y = (4, −2). y₁ ≥ 0: a⁺·1 = 2 and b⁻·(−1) = 2, split 1 : 1;
    y₂ < 0: a⁻·1 = −1 and b⁺·(−1) = −1, split 1 : 1. p = (1, 1) → p_a = p_b = (1/2, 1/2)."""
    n = nets.Net(0, np.float64)
    a = n.op("Identity", ["x"])
    b = n.op("Mul", ["x", n.const([-1.0, -1.0])])
    n.op("Sub", [a, b])
    signals = _trace(n.model(["N", 2], 2), np.array([[2.0, -1.0]]), np.ones((1, 2)))
    np.testing.assert_allclose(signals[a], [[0.5, 0.5]])
    np.testing.assert_allclose(signals[b], [[0.5, 0.5]])


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("model_seed", [0, 1])
def test_extended_equals_excitation_on_a_relu_network(model_seed, residual):
    """Non-negative input, ReLU network: eEBP is EBP at every tensor (the x⁻ stream is exactly zero), with
    the top layer's units read as pos-neurons (what the methods do: the target is explained as winning,
    whatever the sign of its logit; some of these targets' logits are negative)."""
    model = fold_batch_norms(nets.relu_net(model_seed, residual=residual))  # as instrument() does: a Conv
    x = np.random.default_rng(model_seed).uniform(0.0, 1.0, (3, 3, 12, 12)).astype(np.float32)  # output that BN
    seed = np.eye(4)[[0, 2, 3]]  # shifts to positive would otherwise be a negative activation carrying mass
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    top = [node for node in model.graph.node if node.op_type == "Gemm"][-1].output[0]
    assert (acts.values[top][[0, 1, 2], [0, 2, 3]] < 0).any()  # the convention matters here
    ebp = backward(wb.graph, acts.values, seed, "excitation", trace=True)
    eebp = backward(wb.graph, acts.values, seed, "extended", trace=True, responses={top: np.abs(acts.values[top])})
    assert ebp.keys() == eebp.keys()
    for name in ebp:
        np.testing.assert_allclose(eebp[name], ebp[name], rtol=1e-12, atol=1e-15, err_msg=name)


def _signed_net(seed: int):
    """float64 (N, 6) → (N, 3): Gemm–PRelu, max-feature-map (Max of two Slices), Gemm–LeakyRelu, a
    residual Add, a Sub of two branches, Gemm: negative activations everywhere, and signed inputs."""
    n = nets.Net(seed, np.float64)
    h = n.op("PRelu", [n.op("Gemm", ["x", n.normal(8, 6, scale=1.0), n.normal(8, scale=0.1)], transB=1),
                       n.uniform(0.1, 0.3, 8)])
    low = n.op("Slice", [h, n.ints([0]), n.ints([4]), n.ints([1])])
    high = n.op("Slice", [h, n.ints([4]), n.ints([8]), n.ints([1])])
    m = n.op("Max", [low, high])  # (N, 4)
    g = n.op("LeakyRelu", [n.op("Gemm", [m, n.normal(4, 4, scale=1.0)], transB=1)], alpha=0.2)
    r = n.op("Add", [m, g])
    d = n.op("Sub", [r, n.op("Gemm", [r, n.normal(4, 4, scale=0.3)], transB=1)])
    n.op("Gemm", [d, n.normal(3, 4, scale=1.0), n.normal(3, scale=0.1)], transB=1)
    return n.model(["N", 6], 3)


@pytest.mark.parametrize("model_seed", [0, 1, 2])
def test_mass_is_conserved_with_negative_activations(model_seed):
    """Wang et al.'s Z⁺, Z⁻ normalise each parent's two streams: every tensor holds mass 1, all p ≥ 0,
    where EBP weighs negative inputs by W⁺ and hands them negative "probabilities"."""
    x = np.random.default_rng(model_seed).normal(size=(4, 6))
    seed = np.eye(3)[[0, 1, 2, 0]]
    signals = _trace(_signed_net(model_seed), x, seed)
    for name in ("x", "gemm_0", "prelu_1", "max_4", "add_7", "sub_9"):  # every cut of the graph
        np.testing.assert_allclose(_mass(signals[name]), 1.0, atol=1e-9, err_msg=name)
    for name, signal in signals.items():
        assert signal.min() >= 0.0, name
    assert _trace(_signed_net(model_seed), x, seed, "excitation")["x"].min() < 0


def test_responses_replace_the_activations_excitation_weighs():
    """gweEBP's ã: y = W ã-weighted, W = [[1, 2]], x = (1, 1), ã = (3, 1): P = ã ⊙ W⁺/(W⁺ã) = (3, 2)/5;
    the gradient ignores responses."""
    n = nets.Net(0, np.float64)
    n.op("Gemm", ["x", n.const([[1.0, 2.0]])], transB=1)
    model, x = n.model(["N", 2], 1), np.ones((1, 2))
    responses = {"x": np.array([[3.0, 1.0]])}
    for signal in ("excitation", "extended"):
        np.testing.assert_allclose(_trace(model, x, np.ones((1, 1)), signal, responses=responses)["x"], [[0.6, 0.4]])
    np.testing.assert_allclose(_trace(model, x, np.ones((1, 1)), "gradient", responses=responses)["x"], [[1.0, 2.0]])
