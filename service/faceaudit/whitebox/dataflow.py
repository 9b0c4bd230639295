"""Which part of a graph a backward pass walks, and where every value it reads comes from.

A tensor is an *activation* when its value depends on the model input: Shape and Size read only
the input's shape, so dependence stops there (a Reshape whose target is computed with Shape is
still walked: its data input carries the signal, its shape input is never differentiated). The
*path* from a source tensor (the model input or a named layer) to the score is the set of nodes
with an input that depends on the source by value and an output the score depends on by value.
Every other tensor a path node reads is either a *constant* of the model (an initializer, a
Constant node, or a subgraph computed from those alone, evaluated once with onnx's reference
evaluator) or an activation the source does not influence, read from the instrumented run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

# Operators whose output depends only on the shape of their input, not on its values.
SHAPE_ONLY = frozenset({"Shape", "Size"})


def descendants(nodes: Sequence[onnx.NodeProto], sources: Iterable[str], *, through_shape: bool = False) -> set[str]:
    """Tensors that depend on `sources` (included) by value, or also by shape; nodes in topological order."""
    found = set(sources)
    for node in nodes:
        if (through_shape or node.op_type not in SHAPE_ONLY) and any(name in found for name in node.input if name):
            found.update(name for name in node.output if name)
    return found


def ancestors(nodes: Sequence[onnx.NodeProto], targets: Iterable[str], *, through_shape: bool = False) -> set[str]:
    """Tensors that `targets` (included) depend on by value, or also by shape."""
    found = set(targets)
    for node in reversed(nodes):
        if (through_shape or node.op_type not in SHAPE_ONLY) and any(name in found for name in node.output):
            found.update(name for name in node.input if name)
    return found


def path_nodes(nodes: Sequence[onnx.NodeProto], sources: Iterable[str], targets: Iterable[str]
               ) -> tuple[list[onnx.NodeProto], set[str]]:
    """The nodes that carry a signal from `sources` to `targets` (topological order), and the tensors they carry.

    A node is on the path when one of its inputs depends on a source by value and one of its
    outputs is a value-ancestor of a target; the node that computes a source is not.
    """
    carrying = descendants(nodes, sources) & ancestors(nodes, targets)
    walked = [n for n in nodes
              if any(name in carrying for name in n.input) and any(name in carrying for name in n.output)]
    return walked, carrying


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


@dataclass(frozen=True)
class SignalGraph:
    """A model's graph seen by the backward pass: nodes, the input and score, and its constants."""

    nodes: tuple[onnx.NodeProto, ...]  # every node of the main graph, topological order
    input_name: str
    score: str
    opset: int  # of the default domain; rules read attributes by it (Softmax's axis, Clip's bounds)
    constants: Mapping[str, np.ndarray] = field(repr=False)

    def path(self, source: str | None = None) -> tuple[list[onnx.NodeProto], set[str]]:
        """Nodes from `source` (default: the model input) to the score, and the signal-carrying tensors."""
        return path_nodes(self.nodes, [source or self.input_name], [self.score])

    def activations(self) -> list[str]:
        """Tensors computed from the input that the walk from the input reads (the input excluded)."""
        nodes, _ = self.path()
        dependent = descendants(self.nodes, [self.input_name])
        read = dict.fromkeys(name for n in nodes for name in [*n.input, *n.output] if name)
        return [name for name in read if name in dependent and name != self.input_name]


def signal_graph(model: onnx.ModelProto, input_name: str, score: str) -> SignalGraph:
    """The SignalGraph of `model`, its constants read from initializers or folded once."""
    nodes = tuple(model.graph.node)
    walked, _ = path_nodes(nodes, [input_name], [score])
    dependent = descendants(nodes, [input_name])
    wanted = {name for n in walked for name in n.input if name and name not in dependent}
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in wanted}
    # What depends on the input's shape cannot be folded; rules that need such a value say so.
    computed = sorted(wanted - constants.keys() - descendants(nodes, [input_name], through_shape=True))
    constants.update(fold_constants(model, computed))
    return SignalGraph(nodes, input_name, score, default_opset(model), constants)


def fold_constants(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Values of tensors computed from initializers and Constant nodes alone, by onnx's reference evaluator."""
    if not names:
        return {}
    needed = ancestors(model.graph.node, names, through_shape=True)
    nodes = [n for n in model.graph.node if any(name in needed for name in n.output)]
    initializers = [t for t in model.graph.initializer if t.name in needed]
    graph = helper.make_graph(nodes, "constants", [], [helper.make_empty_tensor_value_info(n) for n in names],
                              initializer=initializers)
    sub = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    values = ReferenceEvaluator(sub).run(None, {})
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
