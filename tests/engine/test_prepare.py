"""Batch behaviour: dynamic, fixed-then-rewritten, hard-coded, and batch-dependent models."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from faceaudit.engine.prepare import DEPENDENCE_TOLERANCE, ProbeTimeout
from faceaudit.engine.runtime import Session
from faceaudit.errors import InvalidRequest, UnsupportedModel
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.engine.hostile_graphs import endless_loop_classifier


def _reference(proto, x: np.ndarray) -> np.ndarray:
    """Outputs of the untouched model, one image per call (works for any batch handling)."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def test_dynamic_batch_model_is_batch_independent():
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    assert (model.batch.mode, model.batch.dependent, model.session.max_batch) == ("dynamic", False, 64)
    assert model.batch.relative_deviation <= DEPENDENCE_TOLERANCE
    assert model.output_shapes == {"logits": (10,)}


def test_fixed_batch_of_one_is_rewritten_and_outputs_are_unchanged(rng):
    proto = zoo.vgg_classifier(batch=1)
    model = prepared(proto, {"kind": "classifier"})
    assert model.batch.mode == "rewritten" and model.session.max_batch == 64
    x = rng.uniform(size=(5, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(model.session.run(x)[0], _reference(proto, x), rtol=1e-5, atol=1e-6)


def test_hard_coded_batch_falls_back_to_one_image_per_call_and_says_why(rng):
    proto = zoo.hardcoded_batch_classifier()
    model = prepared(proto, {"kind": "classifier"})
    assert (model.batch.mode, model.batch.fixed_batch, model.session.max_batch) == ("fixed", 1, 1)
    assert "hard-codes batch size 1" in model.batch.reason
    x = rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(model.session.run(x)[0], _reference(proto, x))


def test_dynamically_quantised_model_is_detected_as_batch_dependent():
    model = prepared(zoo.dynamic_quantized_classifier(), {"kind": "classifier"})
    assert model.batch.dependent and model.batch.max_deviation > 0
    assert model.batch.relative_deviation < 0.2  # small: it is dependence, not broken batching


def test_exact_mode_runs_one_image_per_call_and_matches_single_image_outputs(rng):
    proto = zoo.dynamic_quantized_classifier()
    model = prepared(proto, {"kind": "classifier"}, exact=True)
    assert model.session.max_batch == 1 and "exact" in " ".join(model.notes)
    x = rng.uniform(size=(3, 3, 16, 16)).astype(np.float32)
    got = np.concatenate([model.session.run(x[i : i + 1])[0] for i in range(3)])
    np.testing.assert_array_equal(got, _reference(proto, x))


def test_qlinear_model_runs_for_black_box_use():
    model = prepared(zoo.qlinear_classifier(), {"kind": "classifier"})
    assert model.batch.mode == "dynamic" and not model.batch.dependent


def test_declared_output_shape_is_not_trusted():
    model = prepared(zoo.wrong_declared_shape_classifier(classes=10), {"kind": "classifier"})
    assert model.output_shapes["logits"] == (10,) and model.output_size == 10
    assert any("declared" in note for note in model.notes)


def test_symbolic_spatial_dims_use_the_given_size():
    proto = zoo.tf_style_classifier(height=16, width=16)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for axis in (1, 2):
        dims[axis].Clear()
        dims[axis].dim_param = f"unk__{axis}"
    with pytest.raises(InvalidRequest, match="--size"):
        prepared(proto, {"kind": "classifier"})
    model = prepared(proto, {"kind": "classifier", "height": 20, "width": 24})  # GAP accepts any size
    assert model.output_shapes["516"] == (4,)


def test_unknown_input_or_output_names_are_refused():
    with pytest.raises(InvalidRequest, match="input_name"):
        prepared(zoo.vgg_classifier(), {"input": "image"})
    with pytest.raises(InvalidRequest, match="output_name"):
        prepared(zoo.two_output_model(), {"output": "518"})


def test_non_image_input_is_refused():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(UnsupportedModel, match="int64"):
        prepared(proto)


def test_graph_mixing_images_across_the_batch_runs_one_image_per_call(rng):
    """Output = Gemm(x - mean over the batch): a batch changes every image's output."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(rng.normal(size=(2, 12)).astype(np.float32), "W")
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["input", "m"], ["c"]),
        helper.make_node("Add", ["c", "input"], ["s"]),
        helper.make_node("Flatten", ["s"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mix", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], initializer=[w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model = prepared(proto, {"kind": "classifier"})
    assert (model.batch.mode, model.session.max_batch) == ("fixed", 1)
    assert "mixes images" in model.batch.reason


def test_large_inputs_run_in_batches_bounded_in_bytes():
    proto = zoo.linear_classifier(height=64, width=64)  # 48 KiB per image
    model = prepared(proto, {"kind": "classifier"}, max_batch=64, max_batch_bytes=1 << 20)
    assert model.session.max_batch == 21 and any("max_batch_bytes" in note for note in model.notes)
    assert prepared(proto, {"kind": "classifier"}, max_batch=16).session.max_batch == 16


def test_a_never_ending_loop_is_stopped_at_the_probe_budget_and_refused():
    started = time.perf_counter()
    with pytest.raises(ProbeTimeout, match=r"within 0.5 s \(probe_seconds\)") as info:
        prepared(endless_loop_classifier(), {"kind": "classifier"}, probe_seconds=0.5, threads=1)
    assert time.perf_counter() - started < 5  # stopped inside the Loop, not after its 2^40 iterations
    assert isinstance(info.value, UnsupportedModel)  # FAILED_PRECONDITION over gRPC


def test_a_loop_that_only_batches_never_end_is_refused_not_run_one_image_at_a_time():
    # One image runs at once, so only the batched probe runs into the budget: that timeout must not pass
    # for a graph that "hard-codes batch size 1" (that fallback would then run it one image per call).
    with pytest.raises(ProbeTimeout, match="probe_seconds"):
        prepared(endless_loop_classifier(only_for_batches=True), {"kind": "classifier"}, probe_seconds=1, threads=1)


def test_a_model_within_the_probe_budget_is_prepared_and_the_budget_timer_ends():
    timers = lambda: sum(isinstance(t, threading.Timer) for t in threading.enumerate())  # noqa: E731
    before = timers()
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"}, probe_seconds=5)
    assert model.batch.mode == "dynamic" and timers() == before


def test_building_the_sessions_does_not_count_against_the_probe_budget(monkeypatch: pytest.MonkeyPatch):
    # A large model (or CUDA start-up) takes long to build and then runs fast: it must not be called never-ending.
    build = Session.__init__

    def slow_build(self, *args, **kwargs):
        time.sleep(0.6)
        build(self, *args, **kwargs)

    monkeypatch.setattr(Session, "__init__", slow_build)
    model = prepared(zoo.vgg_classifier(batch=1), {"kind": "classifier"}, probe_seconds=0.5)  # two builds: 1.2 s
    assert model.batch.mode == "rewritten"


def test_the_probe_runs_share_one_budget(monkeypatch: pytest.MonkeyPatch):
    # Each run alone is well within the budget; the five runs before the last together are not.
    run = Session.run
    runs = []

    def slow_run(self, batch, stop=None):
        runs.append(len(batch))
        time.sleep(0.15)
        return run(self, batch, stop)

    monkeypatch.setattr(Session, "run", slow_run)
    with pytest.raises(ProbeTimeout, match=r"within 0.5 s \(probe_seconds\)"):
        prepared(zoo.linear_classifier(), {"kind": "classifier"}, probe_seconds=0.5)
    assert runs == [1, 1, 1, 1]  # the fifth run (the batch of 4) finds 0.6 s spent and is refused at once
