"""The backward walk against central finite differences through onnxruntime, and its refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from faceaudit.errors import UnsupportedModel
from faceaudit.testing import zoo
from faceaudit.whitebox import backward, instrument, instrument_graph, unsupported_operators
from faceaudit.whitebox.dataflow import signal_graph
from faceaudit.whitebox.instrument import fold_batch_norms
from faceaudit.whitebox.rules import RULES

from tests.conftest import prepared
from tests.whitebox import nets
from tests.whitebox.numerics import central_differences, session

TOLERANCE = 1e-3  # max |finite difference − gradient| / max |gradient|


def _gradient(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    return backward(wb.graph, acts.values, seed, "gradient")["x"]


@pytest.mark.parametrize("build", [nets.dense_net, nets.norm_net, nets.opset11_net, nets.block_net,
                                   lambda: nets.block_net(1, opset=18)])
def test_float64_networks_match_central_differences(build):
    model = build()
    rng = np.random.default_rng(1)
    shape = [2] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = rng.uniform(-1.0, 1.0, shape)
    outputs = int(np.prod([d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim[1:]]))
    seed = rng.normal(size=(2, outputs))
    grad = _gradient(model, x, seed)
    estimate, _ = central_differences(model, x, seed, 1e-5)
    assert np.abs(estimate - grad).max() <= TOLERANCE * np.abs(grad).max()
    assert np.abs(estimate - grad).max() <= 1e-8  # float64: far below the tolerance


@pytest.mark.parametrize("seed_value", [0, 1, 2])
def test_float32_conv_network_matches_central_differences_away_from_kinks(seed_value):
    """Piecewise linear, so central differences are exact wherever no Relu/MaxPool switches within ±h."""
    model = nets.conv_net(seed_value)
    rng = np.random.default_rng(seed_value)
    x = rng.uniform(-1.0, 1.0, (2, 3, 9, 10)).astype(np.float32)
    seed = rng.normal(size=(2, 5))
    grad = _gradient(fold_batch_norms(model), x, seed)  # folded graph, differences on the user's graph
    estimate, kink = central_differences(model, x, seed, 1e-2)
    scale = np.abs(grad).max()
    smooth = kink < 3e-4 * scale
    assert smooth.mean() > 0.6
    assert np.abs(estimate - grad)[smooth].max() <= TOLERANCE * scale


def test_gemm_trans_a_matches_central_differences():
    """Gemm(transA) reads a tensor whose batch is on axis 1: run it with onnxruntime directly, not Session."""
    model = nets.trans_a_net()
    rng = np.random.default_rng(3)
    x, seed = rng.uniform(-1.0, 1.0, (2, 4)), rng.normal(size=(2, 3))
    graph = signal_graph(model, "x", "y")
    exposed = onnx.helper.make_model(model.graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    exposed.graph.output.extend([helper.make_tensor_value_info("transpose_0", onnx.TensorProto.DOUBLE, [4, None])])
    transposed, y = session(exposed).run(["transpose_0", "y"], {"x": x})
    grad = backward(graph, {"x": x, "transpose_0": transposed, "y": y}, seed, "gradient")["x"]
    estimate, _ = central_differences(model, x, seed, 1e-5)
    np.testing.assert_allclose(grad, estimate, atol=1e-8)


def test_batch_rows_are_independent():
    model = nets.dense_net()
    rng = np.random.default_rng(4)
    x, seed = rng.uniform(-1.0, 1.0, (3, 3, 4, 4)), rng.normal(size=(3, 6))
    together = _gradient(model, x, seed)
    for b in range(3):
        np.testing.assert_allclose(together[b : b + 1], _gradient(model, x[b : b + 1], seed[b : b + 1]), atol=1e-12)


def test_the_networks_use_every_rule_they_claim_and_together_every_rule():
    builders = {"conv_net": nets.conv_net, "dense_net": nets.dense_net, "norm_net": nets.norm_net,
                "trans_a_net": nets.trans_a_net, "opset11_net": nets.opset11_net, "block_net": nets.block_net}
    for name, claimed in nets.RULE_COVERAGE.items():
        assert claimed <= {node.op_type for node in builders[name]().graph.node}, name
    assert set().union(*nets.RULE_COVERAGE.values()) == set(RULES)


def test_gradient_at_a_layer_equals_the_full_walk_there():
    model = nets.dense_net()
    x = np.random.default_rng(5).uniform(-1.0, 1.0, (2, 3, 4, 4))
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(x)
    seed = np.random.default_rng(6).normal(size=(2, 6))
    full = backward(wb.graph, acts.values, seed, "gradient", trace=True)
    layer = next(node.output[0] for node in model.graph.node if node.op_type == "Sigmoid")
    at_layer = backward(wb.graph, acts.values, seed, "gradient", source=layer)
    assert set(at_layer) == {layer}
    np.testing.assert_allclose(at_layer[layer], full[layer])


def _tanh_model() -> onnx.ModelProto:
    n = nets.Net(0)
    x = n.op("Tanh", [n.op("Conv", ["x", n.normal(2, 3, 3, 3)], kernel_shape=[3, 3])])
    n.op("Gemm", [n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1), n.normal(3, 2)], transB=1)
    return n.model(["N", 3, 8, 8], 3)


def test_an_operator_without_rule_is_named_with_its_node_and_the_supported_list():
    with pytest.raises(UnsupportedModel) as info:
        instrument_graph(_tanh_model(), "x", "y")
    message = str(info.value)
    assert "Tanh" in message and "'tanh_1'" in message and "supported operators: " in message
    assert all(op in message for op in RULES)


def test_unsupported_operators_lists_only_operators_on_the_path():
    model = _tanh_model()
    assert unsupported_operators(model) == ["Tanh"]
    assert unsupported_operators(nets.dense_net()) == []
    # Shape arithmetic off the data path needs no rule: Shape/Gather/Concat feeding a Reshape.
    n = nets.Net(0)
    shape = n.op("Concat", [n.op("Gather", [n.op("Shape", ["x"]), n.ints([0])], axis=0), n.ints([-1])], axis=0)
    n.op("Gemm", [n.op("Reshape", ["x", shape]), n.normal(4, 48)], transB=1)
    reshaped = n.model(["N", 3, 4, 4], 4)
    assert unsupported_operators(reshaped) == []
    x = np.random.default_rng(0).uniform(size=(2, 3, 4, 4)).astype(np.float32)
    wb = instrument_graph(reshaped, "x", "y")
    acts = wb.forward(x)
    grad = backward(wb.graph, acts.values, np.ones((2, 4)), "gradient")["x"]
    w = onnx.numpy_helper.to_array(reshaped.graph.initializer[-1])
    np.testing.assert_allclose(grad, np.broadcast_to(w.sum(axis=0).reshape(1, 3, 4, 4), x.shape), rtol=1e-6)


def test_a_cast_to_integers_on_the_path_is_refused_by_name():
    n = nets.Net(0, np.float64)
    h = n.op("Gemm", ["x", n.normal(4, 3)])
    n.op("Cast", [n.op("Cast", [h], to=onnx.TensorProto.INT64)], to=onnx.TensorProto.DOUBLE)
    model = n.model(["N", 4], 3)
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(np.ones((1, 4)))
    with pytest.raises(UnsupportedModel, match=r"Cast node 'cast_1'.*INT64.*float-to-float"):
        backward(wb.graph, acts.values, np.ones((1, 3)), "gradient")


def test_pad_in_reflect_mode_is_refused_by_name():
    n = nets.Net(0, np.float64)
    n.op("Pad", ["x", n.ints([0, 1, 0, 1])], mode="reflect")
    model = n.model(["N", 4], 6)
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(np.ones((1, 4)))
    with pytest.raises(UnsupportedModel, match=r"Pad node 'pad_0'.*'reflect'"):
        backward(wb.graph, acts.values, np.ones((1, 6)), "gradient")


def test_weights_computed_from_the_image_are_refused():
    n = nets.Net(0, np.float64)
    n.op("MatMul", ["x", n.op("Transpose", ["x"], perm=[1, 0])])  # x @ xᵀ mixes the batch; refused anyway
    model = n.model(["N", 3], 3)
    graph = signal_graph(model, "x", "y")
    x = np.ones((3, 3))
    with pytest.raises(UnsupportedModel, match="computed from the image"):
        backward(graph, {"x": x, "transpose_0": x.T, "y": x @ x.T}, np.ones((3, 3)), "gradient")


@pytest.mark.parametrize("build", [zoo.qlinear_classifier, zoo.dynamic_quantized_classifier])
def test_quantised_models_are_refused_pointing_to_black_box_methods(build):
    model = prepared(build(), {"kind": "classifier"})
    with pytest.raises(UnsupportedModel, match=r"(?s)need float operators.*black-box method"):
        instrument(model)


def test_unknown_signal_is_a_programming_error():
    wb = instrument_graph(nets.norm_net(), "x", "y")
    acts = wb.forward(np.ones((1, 6)))
    with pytest.raises(ValueError, match="signal"):
        backward(wb.graph, acts.values, np.ones((1, 4)), "lrp")  # type: ignore[arg-type]
