"""One rule per ONNX operator (default domain), each implementing all five signal kinds.

Adding an operator: write `rule(ctx, grad, signal) -> {input index: signal}` in the module of its
family (linear maps return `linear_input(SomeLinearMap(...), ctx, index, grad, signal)` and get the
excitation rules for free), add one line to `RULES`, and add the operator to one of the random
networks of tests/whitebox/nets.py so that the finite-difference test covers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from faceaudit.whitebox.rules import activations, linear, normalize, shape, windows
from faceaudit.whitebox.rules.base import NodeContext, Rule, Signals

__all__ = ["RULES", "NodeContext", "Rule", "Signals"]

RULES: Mapping[str, Rule] = MappingProxyType({
    # linear maps (linear.py, windows.py)
    "Conv": Rule(windows.conv),
    "Gemm": Rule(linear.gemm),
    "MatMul": Rule(linear.matmul),
    "Add": Rule(linear.arithmetic),
    "Sub": Rule(linear.arithmetic),
    "Mul": Rule(linear.arithmetic),
    "Div": Rule(linear.arithmetic),
    "BatchNormalization": Rule(linear.batch_normalization),
    "AveragePool": Rule(windows.average_pool),
    "GlobalAveragePool": Rule(linear.global_average_pool),
    "ReduceMean": Rule(linear.reduce_mean),
    # winner takes all
    "MaxPool": Rule(windows.max_pool),
    "Max": Rule(activations.maximum),
    # activations (activations.py)
    "Relu": Rule(activations.relu),
    "LeakyRelu": Rule(activations.leaky_relu),
    "PRelu": Rule(activations.prelu),
    "Clip": Rule(activations.clip),
    "Sigmoid": Rule(activations.sigmoid),
    # normalisation (normalize.py)
    "Softmax": Rule(normalize.softmax),
    "LpNormalization": Rule(normalize.lp_normalization),
    "ReduceL2": Rule(normalize.reduce_l2),
    # moving values (shape.py)
    "Flatten": Rule(shape.reshape),
    "Reshape": Rule(shape.reshape),
    "Squeeze": Rule(shape.reshape),
    "Unsqueeze": Rule(shape.reshape),
    "Identity": Rule(shape.reshape),
    "Expand": Rule(shape.expand),
    "Dropout": Rule(shape.reshape),
    "Transpose": Rule(shape.transpose),
    "Cast": Rule(shape.cast),
    "Concat": Rule(shape.concat),
    "Split": Rule(shape.split, multi_output=True),
    "Slice": Rule(shape.slice_),
    "Pad": Rule(shape.pad),
})
