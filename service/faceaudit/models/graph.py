"""Read-only queries on an ONNX graph, and the batch-dimension rewrite.

Rewrites follow onnx's compose.py: pure functions that return a checked copy and never modify
their argument.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import onnx

# Operators that carry quantised integer arithmetic: they run, but have no meaningful backward.
QUANTISED_OPS = frozenset(
    {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear", "QuantizeLinear",
     "DequantizeLinear", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QGemm"}
)
# Operators that only move or relabel values: followed through when looking for an output's origin.
_PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"})

Dim = int | str | None  # fixed size, symbolic name, or unknown


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[Dim, ...] | None  # None when the rank is unknown
    elem_type: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": None if self.dims is None else list(self.dims), "type": self.elem_type}


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor_type = value.type.tensor_type
    elem = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name if tensor_type.elem_type else "unknown"
    if not tensor_type.HasField("shape"):
        return TensorInfo(value.name, None, elem)
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    return TensorInfo(value.name, tuple(dims), elem)


def graph_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    """Inputs the caller must feed. Models of IR < 4 also list every initializer as an input."""
    initializers = {t.name for t in model.graph.initializer}
    return [_tensor_info(v) for v in model.graph.input if v.name not in initializers]


def graph_outputs(model: onnx.ModelProto) -> list[TensorInfo]:
    return [_tensor_info(v) for v in model.graph.output]


def operator_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Operator type → count, over the main graph (domain-qualified when not ai.onnx)."""
    counts = Counter(f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type for n in model.graph.node)
    return dict(sorted(counts.items()))


def quantised_operators(model: onnx.ModelProto) -> list[str]:
    return sorted({n.op_type for n in model.graph.node if n.op_type in QUANTISED_OPS})


def origin_op(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    """The node that computes `tensor`, looking through reshapes, casts and identities."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(tensor)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        node = producers.get(node.input[0])
    return node


def consumers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if tensor in node.input]


def select_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy whose graph outputs are `names` only; onnxruntime then skips every other branch."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [v for v in copy.graph.output if v.name in names]
    if len(kept) != len(names):
        raise ValueError(f"outputs {names} are not all graph outputs")
    del copy.graph.output[:]
    copy.graph.output.extend(kept)
    return copy


def make_batch_dynamic(model: onnx.ModelProto, input_name: str, *, symbol: str = "batch") -> onnx.ModelProto:
    """A copy whose input `input_name` and its batch-1 graph outputs have a symbolic first dimension.

    Outputs whose first dimension is fixed at another size have no batch dimension and are left
    alone. Intermediate value_info shapes are dropped: they would pin the old batch size. Whether the
    graph computes the same thing at another batch size (a Reshape may hard-code it) is not
    knowable from the graph alone; the caller verifies by running it.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    targets = [v for v in copy.graph.input if v.name == input_name]
    if not targets:
        raise ValueError(f"no graph input named {input_name!r}")
    for value in [*targets, *copy.graph.output]:
        shape = value.type.tensor_type.shape
        if len(shape.dim) > 0 and shape.dim[0].dim_value in (0, 1):
            shape.dim[0].Clear()
            shape.dim[0].dim_param = symbol
    del copy.graph.value_info[:]
    onnx.checker.check_model(copy)
    return copy
