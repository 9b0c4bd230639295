"""Infer the ModelSpec fields that the graph makes unambiguous, and nothing more.

Rules (each field is left unknown when its rule does not apply):
- input: the only non-initializer graph input.
- layout, channels: a rank-4 input with exactly one of dims 1 and 3 fixed to 1 or 3 (that one is the
  channel dim); or an input consumed only by a Transpose with perm [0, 3, 1, 2] (tf2onnx's NHWC).
- height, width: the fixed spatial dims of that layout.
- output: the only graph output.
- kind, output_type: the op that computes the output, looking through reshapes: Softmax or Sigmoid
  means a classifier emitting probabilities; L2 normalisation (LpNormalization p=2, or a Div by a
  ReduceL2 / Sqrt) means an embedding network. Any other final op makes the output *assumed* to be
  logits, should the model be declared a classifier.
"""

from __future__ import annotations

from typing import Any

import onnx

from faceaudit.models.graph import TensorInfo, consumers, graph_inputs, graph_outputs, origin_op
from faceaudit.models.spec import ASSUMED_DEFAULTS, ModelSpec, Source

_NORM_OPS = frozenset({"ReduceL2", "Sqrt"})


def infer_spec(model: onnx.ModelProto, *, input_name: str | None = None, output_name: str | None = None) -> ModelSpec:
    """The spec the graph reveals; `input_name`/`output_name` pick among several inputs/outputs."""
    values: dict[str, Any] = dict(ASSUMED_DEFAULTS)
    sources: dict[str, Source] = {name: "assumed" for name in ASSUMED_DEFAULTS}

    def infer(name: str, value: Any) -> None:
        if value is not None:
            values[name] = value
            sources[name] = "inferred"

    inputs = [t for t in graph_inputs(model) if input_name in (None, t.name)]
    if len(inputs) == 1:
        infer("input_name", inputs[0].name)
        layout, channels, height, width = _image_layout(model, inputs[0])
        infer("layout", layout)
        infer("channels", channels)
        infer("height", height)
        infer("width", width)

    outputs = [t for t in graph_outputs(model) if output_name in (None, t.name)]
    if len(outputs) == 1:
        infer("output_name", outputs[0].name)
        kind, output_type = _head(model, outputs[0].name)
        infer("kind", kind)
        if output_type is not None:
            infer("output_type", output_type)
        elif kind != "embedding":
            values["output_type"] = "logits"
            sources["output_type"] = "assumed"
    return ModelSpec(**values, sources=sources)


def _image_layout(model: onnx.ModelProto, tensor: TensorInfo) -> tuple[str | None, int | None, int | None, int | None]:
    dims = tensor.dims
    if dims is None or len(dims) != 4:
        return None, None, None, None
    channel_like = [axis for axis in (1, 3) if dims[axis] in (1, 3)]
    layout = None
    if len(channel_like) == 1:
        layout = "NCHW" if channel_like[0] == 1 else "NHWC"
    uses = consumers(model, tensor.name)
    if len(uses) == 1 and uses[0].op_type == "Transpose":
        perm = next((list(a.ints) for a in uses[0].attribute if a.name == "perm"), None)
        transposed = "NHWC" if perm == [0, 3, 1, 2] else None
        if transposed and layout in (None, transposed):
            layout = transposed
    if layout is None:
        return None, None, None, None
    c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    channels = fixed[c_axis] if fixed[c_axis] in (1, 3) else None
    return layout, channels, fixed[h_axis], fixed[w_axis]


def _normalises_last_axis(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Softmax over the class axis: the last one (-1, or 1 of a rank-2 output)."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    ranks = {t.name: len(t.dims) for t in graph_outputs(model) if t.dims is not None}
    return axis == -1 or axis == 1 and ranks.get(node.output[0], 2) == 2


def _head(model: onnx.ModelProto, output: str) -> tuple[str | None, str | None]:
    node = origin_op(model, output)
    if node is None:
        return None, None
    if node.op_type == "Sigmoid" or node.op_type == "Softmax" and _normalises_last_axis(model, node):
        return "classifier", "probabilities"
    if node.op_type == "LpNormalization":
        p = next((a.i for a in node.attribute if a.name == "p"), 2)
        return ("embedding", None) if p == 2 else (None, None)
    if node.op_type == "Div" and len(node.input) == 2:
        divisor = origin_op(model, node.input[1])
        while divisor is not None and divisor.op_type in ("Clip", "Max", "Add", "Expand"):
            divisor = origin_op(model, divisor.input[0])
        if divisor is not None and divisor.op_type in _NORM_OPS:
            return "embedding", None
    return None, None
