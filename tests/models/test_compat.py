"""Models stamped by very new or very old exporters."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from faceaudit.errors import UnsupportedModel
from faceaudit.models import load_model
from faceaudit.models.compat import runtime_max_ir_version, runtime_max_opset
from faceaudit.testing import zoo


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_probed_limits_are_what_the_runtime_really_accepts():
    ir, opset = runtime_max_ir_version(), runtime_max_opset()
    assert 7 <= ir <= onnx.IR_VERSION and 13 <= opset <= onnx.defs.onnx_opset_version()
    proto = zoo.linear_classifier()
    proto.ir_version = ir
    proto.opset_import[0].version = opset
    _run(proto, np.zeros((1, 3, 8, 8), np.float32))  # must not raise


def test_ir_version_newer_than_the_runtime_is_lowered_with_a_note():
    proto = zoo.linear_classifier()
    proto.ir_version = runtime_max_ir_version() + 1
    loaded = load_model(proto.SerializeToString())
    assert loaded.proto.ir_version == runtime_max_ir_version()
    assert any("IR version" in note for note in loaded.notes)
    x = np.random.default_rng(0).uniform(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(loaded.proto, x), _run(zoo.linear_classifier(), x))


def test_opset_newer_than_the_runtime_is_refused_with_both_versions():
    proto = zoo.linear_classifier()
    proto.opset_import[0].version = runtime_max_opset() + 5
    with pytest.raises(UnsupportedModel, match=rf"opset {runtime_max_opset() + 5}.*onnxruntime {ort.__version__}"):
        load_model(proto.SerializeToString())


def _old_exporter_model() -> onnx.ModelProto:
    """IR 3, opset 6: initializers listed among the graph inputs, Add with the old broadcast attribute."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    b = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    nodes = [
        helper.make_node("Gemm", ["input", "W", "b"], ["gemm"], transB=1, broadcast=1),
        helper.make_node("Relu", ["gemm"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "old",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3])],
        initializer=[onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)


def test_old_exporter_model_is_converted_and_computes_the_same():
    loaded = load_model(_old_exporter_model().SerializeToString())
    assert any("opset 6 converted up to 7" in note for note in loaded.notes)
    x = np.array([[1.0, -2.0, 3.0, 0.5]], np.float32)
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    expected = np.maximum(x @ w.T + np.array([0.5, -1.0, 2.0], np.float32), 0)
    np.testing.assert_allclose(_run(loaded.proto, x), expected, rtol=1e-6)
