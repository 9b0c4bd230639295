"""Adversarial models and specs: each gets a clear domain error, never a traceback or a wrong score."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from faceaudit.model_info import inspect_model
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer
from faceaudit.errors import InvalidRequest, LimitExceeded, SpecAmbiguous, UnsupportedModel
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo

from tests.conftest import load, prepared


def _model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def _value(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_operator_onnxruntime_lacks_is_unsupported_and_inspect_still_reports():
    proto = _model([helper.make_node("Foo", ["input"], ["y"], domain="com.example")],
                   [_value("input", ["N", 3, 8, 8])], [_value("y", ["N", 4])], opsets=(("", 17), ("com.example", 1)))
    loaded = load(proto)
    with pytest.raises(UnsupportedModel, match="cannot load the model"):
        prepared(proto, {"kind": "classifier"})
    info = inspect_model(loaded, resolve_spec(loaded)).to_dict()
    assert info["batch"]["mode"] == "unknown" and "cannot load" in info["batch"]["reason"]


def test_output_without_a_batch_dimension_is_refused():
    proto = _model([helper.make_node("ReduceMean", ["input"], ["y"], axes=[0, 2, 3], keepdims=0)],
                   [_value("input", ["N", 3, 8, 8])], [_value("y", [3])])
    with pytest.raises(UnsupportedModel, match="no batch dimension"):
        prepared(proto, {"kind": "embedding"})


def test_an_unused_auxiliary_output_does_not_pin_the_batch_once_the_output_is_chosen():
    proto = zoo.two_output_model()
    shape_node = helper.make_node("Shape", ["input"], ["shape"])
    proto.graph.node.append(shape_node)
    proto.graph.output.append(_value("shape", [4], TensorProto.INT64))
    model = prepared(proto, {"kind": "classifier", "output": "517"})
    assert model.batch.mode == "dynamic" and model.session.output_names == ["517"]


def test_non_vector_or_integer_outputs_cannot_be_scored():
    identity = _model([helper.make_node("Relu", ["input"], ["y"])], [_value("input", ["N", 3, 8, 8])],
                      [_value("y", ["N", 3, 8, 8])])
    with pytest.raises(UnsupportedModel, match="one float vector per image"):
        Scorer(prepared(identity, {"kind": "classifier"}), ClassTarget(0))
    argmax = _model([helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("ArgMax", ["f"], ["y"], axis=1)],
                    [_value("input", ["N", 3, 8, 8])], [_value("y", ["N", 1], TensorProto.INT64)])
    with pytest.raises(UnsupportedModel, match="int64"):
        Scorer(prepared(argmax, {"kind": "classifier"}), ClassTarget(0))


def test_softmax_over_the_spatial_axis_is_not_taken_for_class_probabilities():
    proto = _model([helper.make_node("Softmax", ["input"], ["y"], axis=1)], [_value("input", ["N", 3, 8, 8])],
                   [_value("y", ["N", 3, 8, 8])])
    assert resolve_spec(load(proto)).kind is None


@pytest.mark.parametrize(("shape", "values", "error", "field"), [
    (["N", 3, 8, 3], {"layout": "NCHW", "channels": 3, "height": 4, "width": 4}, InvalidRequest, "height"),
    (["N", 24], {"layout": "NCHW", "channels": 3, "height": 8, "width": 8}, UnsupportedModel, None),
    (["N", 3, "h", "w"], {"layout": "NCHW", "height": 8}, SpecAmbiguous, "width"),
    (["N", "c", 8, 8], {"layout": "NCHW"}, SpecAmbiguous, "channels"),
])
def test_inputs_that_disagree_with_the_spec_name_the_field(shape, values, error, field):
    proto = _model([helper.make_node("Flatten", ["input"], ["y"])], [_value("input", shape)], [_value("y", ["N", "k"])])
    with pytest.raises(error) as info:
        prepared(proto, {"kind": "embedding", **values})
    if field:
        assert info.value.field == field


def test_absurd_input_sizes_are_refused_before_allocating():
    proto = _model([helper.make_node("Flatten", ["input"], ["y"])], [_value("input", ["N", 3, 60000, 60000])],
                   [_value("y", ["N", "k"])])
    with pytest.raises(LimitExceeded, match="pixels"):
        prepared(proto, {"kind": "embedding"})


def test_model_without_opset_import_is_read_as_opset_1():
    proto = _model([helper.make_node("Relu", ["input"], ["y"])], [_value("input", [1, 4])], [_value("y", [1, 4])])
    del proto.opset_import[:]
    proto.ir_version = 2
    loaded = load_model(proto.SerializeToString())
    assert any("opset 1" in note for note in loaded.notes) and loaded.proto.opset_import[0].version == 7


def test_padding_rows_are_zeroed_so_batch_dependent_models_do_not_depend_on_history(faces):
    model = prepared(zoo.dynamic_quantized_classifier(), {"kind": "classifier"}, max_batch=8)
    scorer = Scorer(model, ClassTarget(0))
    images = faces(3, 16, 16)
    before = scorer.score([images])
    scorer.score([np.full((8, 16, 16, 3), 255, np.float32)])  # leaves bright rows in the buffers
    np.testing.assert_array_equal(scorer.score([images]), before)


@pytest.mark.parametrize("index", [3.0, "3", True])
def test_non_integer_class_index_is_refused(index):
    with pytest.raises(InvalidRequest, match="not an integer"):
        Scorer(prepared(zoo.linear_classifier(), {"kind": "classifier"}), ClassTarget(index))


def test_cosine_of_a_chunk_of_maximal_float16_pixels_is_not_taken_for_nan():
    model = prepared(zoo.linear_classifier(), {"kind": "embedding"})
    scores = Scorer(model, EmbeddingTarget(np.ones(5))).score([np.full((300, 8, 8, 3), 255, np.float16)])
    assert np.isfinite(scores).all()
