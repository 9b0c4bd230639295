"""The backward pass: a reverse-topological walk from a seed at the score to the input or a layer.

    signals[score] = seed                                   (B, K): one row per image/target
    for node in reversed(path(source → score)):
        signals[input_i] += RULES[node.op_type](node, signals[output], signal)[i]

A tensor read by several nodes sums what each sends back: the chain rule for gradients, and
eq. 2 of Zhang et al. (2016) for excitation, P(a_j) = Σ_{parents i} P(a_j | a_i) P(a_i). Every
node on the path has a rule or the walk stops with UnsupportedModel naming it: a node is never
skipped, and an input that depends on the source but gets no signal from its rule is an error too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from faceaudit.errors import UnsupportedModel
from faceaudit.models.graph import graph_inputs
from faceaudit.whitebox.dataflow import SignalGraph, path_nodes
from faceaudit.whitebox.rules import RULES, NodeContext, Rule
from faceaudit.whitebox.signals import Signal, check_signal


def operator_label(node: onnx.NodeProto) -> str:
    """The op type, domain-qualified outside the default domain (rules exist for the default domain only)."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def rule_for(node: onnx.NodeProto) -> Rule:
    """The node's rule, or UnsupportedModel naming the operator, the node and the supported operators."""
    rule = RULES.get(operator_label(node))
    if rule is None:
        raise UnsupportedModel(
            f"white-box methods have no rule for operator {operator_label(node)} "
            f"(node {node.name or node.output[0]!r}); supported operators: {', '.join(sorted(RULES))}. "
            "Black-box methods (occlusion, rise, ...) explain any model"
        )
    return rule


def check_supported(nodes: Sequence[onnx.NodeProto]) -> None:
    """UnsupportedModel for the first node (topological order) that has no rule."""
    for node in nodes:
        rule_for(node)


def unsupported_operators(model: onnx.ModelProto) -> list[str]:
    """Operators between the model's inputs and outputs that have no white-box rule (for `models inspect`)."""
    sources, targets = [t.name for t in graph_inputs(model)], [v.name for v in model.graph.output]
    walked, _ = path_nodes(list(model.graph.node), sources, targets)
    return sorted({operator_label(n) for n in walked if operator_label(n) not in RULES})


def backward(
    graph: SignalGraph, values: Mapping[str, np.ndarray], seed: np.ndarray, signal: Signal, *,
    source: str | None = None, trace: bool = False, responses: Mapping[str, np.ndarray] | None = None,
    reference: Mapping[str, np.ndarray] | None = None, epsilon: float = 0.0,
) -> dict[str, np.ndarray]:
    """Signals (float64) from `seed` at the score down to `source` (default: the model input).

    `values` holds the activations of one instrumented run (B images); `seed` is (B, K) at the
    score tensor (B, K, ...). Returns {source: signal}, or with `trace` the signal of every tensor
    on the path (tests check excitation mass layer by layer with it). `responses` replaces, for the
    excitation kinds only, the responses that linear maps and sums weigh their inputs by (â → ã of
    gweEBP, Wang et al. 2025 eq. 6; tensors not in it keep their values) and whose sign makes a
    parent a pos- or neg-neuron for eEBP; winners (MaxPool, Max) and gates always come from `values`.
    `reference` holds the activations of the reference input for the deeplift signal (same shapes as
    `values`); `epsilon` is LRP-ε's stabiliser.
    """
    check_signal(signal)
    source = source or graph.input_name
    nodes, carrying = graph.path(source)
    if source not in carrying:
        raise ValueError(f"the score {graph.score!r} does not depend on {source!r}")
    score = values[graph.score]
    signals = {graph.score: np.asarray(seed, dtype=np.float64).reshape(score.shape)}
    for node in reversed(nodes):
        grads = [signals.get(name) if trace else signals.pop(name, None) for name in node.output]
        ctx = NodeContext(node, values, graph.constants, graph.opset, responses, reference=reference, epsilon=epsilon)
        sent = rule_for(node).apply(ctx, grads, signal)
        for index, name in enumerate(node.input):
            if name not in carrying:
                continue
            if index not in sent:
                raise UnsupportedModel(
                    f"{ctx.label}: its rule passes no signal into input {index} ({name!r}), which is computed "
                    "from the image on the way to the score"
                )
            if np.shape(sent[index]) != np.shape(values[name]):  # a rule's bug: never let numpy broadcast it away
                raise ValueError(f"{ctx.label}: signal of shape {np.shape(sent[index])} for {name!r} of shape "
                                 f"{np.shape(values[name])}")
            signals[name] = signals[name] + sent[index] if name in signals else sent[index]
    return signals if trace else {source: signals[source]}

