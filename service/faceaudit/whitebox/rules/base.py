"""What a rule sees of its node, and what a rule is.

A rule maps the signal arriving at a node's output to the signals leaving through its inputs:

    rule(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> {input index: signal}

`grad` has the shape of output 0 (B, ...); the returned arrays have the shapes of the inputs they
are keyed by. A rule returns a signal for every input it can differentiate through and nothing for
parameters (weights, shapes, bounds); the walk checks that every input that depends on the source
got one, so an unsupported combination (a Conv whose weights are computed from the image) stops
with an error instead of being silently treated as a constant. Multi-output operators (Split, a
Dropout whose mask is used) set `Rule.multi_output` and receive the list of output signals instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from faceaudit.errors import UnsupportedModel
from faceaudit.whitebox.signals import Signal

Signals = dict[int, np.ndarray]


class NodeContext:
    """One node with read access to its inputs' and outputs' values (float64) and attributes."""

    def __init__(self, node: onnx.NodeProto, values: Mapping[str, np.ndarray], constants: Mapping[str, np.ndarray],
                 opset: int, responses: Mapping[str, np.ndarray] | None = None, *,
                 reference: Mapping[str, np.ndarray] | None = None, epsilon: float = 0.0) -> None:
        self.node = node
        self._responses = responses or {}
        self._reference = reference
        self.epsilon = epsilon  # LRP-ε's stabiliser
        self.opset = opset
        self._values = values
        self._constants = constants
        self._attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    @property
    def label(self) -> str:
        """Conv node 'conv_3' — how error messages name the node."""
        return f"{self.node.op_type} node {self.node.name or self.node.output[0]!r}"

    def attr(self, name: str, default: Any = None) -> Any:
        value = self._attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def has_input(self, index: int) -> bool:
        return index < len(self.node.input) and self.node.input[index] != ""

    def is_constant(self, index: int) -> bool:
        """Whether input `index` is a constant of the model (initializer, Constant, folded subgraph)."""
        return self.node.input[index] in self._constants

    def input(self, index: int) -> np.ndarray:
        return self._value(self.node.input[index])

    def response(self, index: int) -> np.ndarray:
        """The response â of input `index` as excitation rules weigh it: its value, or the override given to
        the backward pass (gweEBP's gradient-weighted ã, Wang et al. 2025 eq. 6). Only the excitation
        rules of linear maps and sums read it; winners (MaxPool, Max) and gates keep the forward values."""
        name = self.node.input[index]
        return np.asarray(self._responses[name], dtype=np.float64) if name in self._responses else self.input(index)

    def output_response(self) -> np.ndarray:
        """Output 0's response as eEBP reads its sign (pos- or neg-neuron): the override if given, else its value.
        Methods override the top layer's output with |y| so that the target unit is explained as winning."""
        name = self.node.output[0]
        return np.asarray(self._responses[name], dtype=np.float64) if name in self._responses else self.output()

    def output(self, index: int = 0) -> np.ndarray:
        return self._value(self.node.output[index])

    def reference_input(self, index: int) -> np.ndarray:
        """Input `index` in the reference run (DeepLIFT's x₀); a constant is its own reference."""
        return self._reference_value(self.node.input[index])

    def reference_output(self, index: int = 0) -> np.ndarray:
        return self._reference_value(self.node.output[index])

    def _reference_value(self, name: str) -> np.ndarray:
        if name in self._constants:
            return np.asarray(self._constants[name], dtype=np.float64)
        if self._reference is None or name not in self._reference:
            raise ValueError(f"{self.label}: the deeplift signal needs the reference run's {name!r}")
        return np.asarray(self._reference[name], dtype=np.float64)

    def shape(self, index: int) -> tuple[int, ...]:
        """Shape of input `index`, without converting its value."""
        name = self.node.input[index]
        return tuple(np.shape(self._constants[name] if name in self._constants else self._lookup(name)))

    def weight(self, index: int, what: str) -> np.ndarray:
        """The value of constant input `index` (weights, bounds); refuse one computed from the image."""
        if not self.is_constant(index):
            raise UnsupportedModel(
                f"{self.label}: its {what} (input {index}, {self.node.input[index]!r}) is computed from the image; "
                "white-box rules need it to be a constant of the model"
            )
        return np.asarray(self._constants[self.node.input[index]], dtype=np.float64)

    def _value(self, name: str) -> np.ndarray:
        value = self._constants[name] if name in self._constants else self._lookup(name)
        return np.asarray(value, dtype=np.float64)

    def _lookup(self, name: str) -> np.ndarray:
        if name not in self._values:
            raise UnsupportedModel(
                f"{self.label}: tensor {name!r} is computed from the input's shape, which the white-box rules "
                "cannot read; export the model with constant shapes"
            )
        return self._values[name]


RuleFn = Callable[[NodeContext, Any, Signal], Signals]


@dataclass(frozen=True)
class Rule:
    """A rule function; `multi_output` rules get the list of output signals (None where none arrives)."""

    fn: RuleFn
    multi_output: bool = False

    def apply(self, ctx: NodeContext, grads: Sequence[np.ndarray | None], signal: Signal) -> Signals:
        if self.multi_output:
            return self.fn(ctx, grads, signal)
        used = [i for i, g in enumerate(grads) if g is not None and i > 0]
        if used:
            raise UnsupportedModel(
                f"{ctx.label}: its output {used[0]} ({ctx.node.output[used[0]]!r}) is used on the way to the score; "
                "the white-box rule for this operator handles output 0 only"
            )
        return self.fn(ctx, grads[0], signal)
