"""The compiled backward rules: for one node, the ONNX nodes that carry its output's signal to its inputs.

The rules mirror rules/*.py:

    Conv            gradient: Wᵀg as a Conv with the flipped, transposed kernel (stride 1, ≥ 8 channels:
                    onnxruntime's blocked Conv is the fast kernel) or a ConvTranspose with the Conv's
                    geometry (pads, strides, dilations, groups; output_padding for the exact input size)
                    excitation: x ⊙ W⁺ᵀ(p ⊘ Conv(x, W⁺)), 0/0 := 0
                    extended (eEBP): the two streams with W⁺ and W⁻ over x⁺ and x⁻ (`_extended`), for
                    every linear map (Conv, Gemm, MatMul, constant scales, pools), the parent's sign
                    read from its response (Emitter.response: |y| for the target, gweEBP's ã)
    Gemm, MatMul    g Wᵀ;  x ⊙ (p ⊘ x W⁺) W⁺ᵀ   (constant W = α·op(B)); a one-hot seed at the top layer
                    reads only its row of Wᵀ (Gather)
    Add/Sub/Mul/Div a constant: the elementwise scale c (±1, c, 1/c), summed over broadcast axes;
                    Add of two tensors: g to both; excitation splits p by a⁺, b⁺ (rules.linear.add_tensors);
                    extended by a⁺, b⁺ where y ≥ 0 and by a⁻, b⁻ where y < 0
    BatchNorm       the per-channel scale γ/√(var + ε) (most are folded into their Conv already)
    Relu, PRelu, LeakyRelu, Clip, Sigmoid: products with 0/1 indicators (gradient, guided, deconv);
                    excitation passes p. A Relu read only by a MaxPool is applied on the pooled grid.
    MaxPool         taps stacked (N, C, T, *out), the first tap equal to the output wins (CumSum), the
                    signal goes back by a grouped ConvTranspose with one-hot kernels
    Global/AveragePool  Expand of g/n; AveragePool: depthwise ConvTranspose with a ones kernel of g/count
    Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout, Cast: Reshape to Shape(x); Transpose: inverse
    Concat          Slice per input;  Softmax, LpNormalization: their Jacobians (excitation passes p)

onnxruntime's Where, Sign, DepthToSpace and MaxPool's Indices output are several times slower than
a Conv of the same size on CPU; the rules avoid them (0/0 := 0 is n / (d + [d = 0]) · [d ≠ 0]).

A rule is `rule(em, node, grad, signal) -> {input index: tensor name}`: it appends nodes to the
Emitter and returns the names of the signals it sends into its inputs; a case it cannot express
raises NotCompilable, never an approximation.

May touch: the Emitter's node list and initializers; reads the node's NodeContext (constants,
geometry from rules.windows) and the activations' shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faceaudit.whitebox.rules import NodeContext
from faceaudit.whitebox.rules.linear import reduce_axes
from faceaudit.whitebox.rules.windows import WindowMean, window
from faceaudit.whitebox.signals import Signal, is_excitation

WIDE_CONV = 8  # channels from which a transposed convolution runs as a Conv (onnxruntime's NCHWc block)


class NotCompilable(Exception):
    """Internal: this path has no compiled backward; the caller runs the numpy engine instead."""


class Emitter:
    """Collects the backward nodes and initializers, with fresh names and the model's opset."""

    def __init__(self, taken: set[str], opset: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.opset = opset
        self._taken = taken
        self._zero: str | None = None
        self._one: str | None = None
        self.one_hot: set[str] = set()  # signals with at most one non-zero per row (B, K)
        self.share_weights = True  # the rules' constants are the model's initializers (no dual unit)
        self.nonnegative: set[str] = set()  # tensors that are ≥ 0 by construction (`nonnegative_tensors`)
        self.pooled_relus: set[str] = set()  # Relu outputs whose rule the MaxPool reading them applied
        self.relu_before: set[str] = set()  # Relu outputs on the path that only a MaxPool reads
        self.responses: dict[str, str] = {}  # eEBP: tensors whose response is another tensor (|y| of the target)

    def response(self, name: str) -> str:
        """The response â the extended rules weigh and read the sign of: the tensor, or its override."""
        return self.responses.get(name, name)

    def fresh(self, base: str) -> str:
        name, i = f"bw_{base}", 1
        while name in self._taken:
            name, i = f"bw_{base}_{i}", i + 1
        self._taken.add(name)
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(self, value: np.ndarray | float, base: str = "c") -> str:
        array = np.asarray(value)
        array = array.astype(np.int64 if np.issubdtype(array.dtype, np.integer) else np.float32)
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def zero(self) -> str:
        if self._zero is None:
            self._zero = self.const(np.float32(0.0), "zero")
        return self._zero

    def one(self) -> str:
        if self._one is None:
            self._one = self.const(np.float32(1.0), "one")
        return self._one

    def indicator(self, condition: str) -> str:
        """A boolean tensor as 0.0/1.0: products with it select (onnxruntime's Where is many times slower)."""
        return self.op("Cast", [condition], to=TensorProto.FLOAT)

    def safe_divide(self, numerator: str, denominator: str, *, vanishing: bool = False) -> str:
        """numerator / denominator with x/0 := 0 (EBP's 0/0 := 0), broadcasting as numpy does:
        n / (d + [d = 0]) · (1 − [d = 0]), exact where d ≠ 0 (d + 0 = d, q · 1 = q).

        `vanishing`: the caller multiplies each quotient only by terms that are 0 wherever its d is
        (d = W⁺x with x ≥ 0: d = 0 makes every w⁺x in it 0), so the value there does not matter as
        long as it is finite, and n / (d + [d = 0]) suffices."""
        is_zero = self.indicator(self.op("Equal", [denominator, self.zero()]))
        quotient = self.op("Div", [numerator, self.op("Add", [denominator, is_zero])])
        return quotient if vanishing else self.op("Mul", [quotient, self.op("Sub", [self.one(), is_zero])])

    def reduce_sum(self, x: str, axes: list[int], keepdims: bool) -> str:
        return self.op("ReduceSum", [x, self.const(np.array(axes, dtype=np.int64), "axes")], keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(np.array(axes, dtype=np.int64), "axes")], keepdims=1)
        return self.op("ReduceMean", [x], axes=axes, keepdims=1)

    def reduce_l2(self, x: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.op("ReduceL2", [x, self.const(np.array(axes, dtype=np.int64), "axes")], keepdims=1)
        return self.op("ReduceL2", [x], axes=axes, keepdims=1)

    def reshape_like(self, g: str, shape: tuple[int, ...]) -> str:
        """g reshaped to `shape` (a tensor's shape in the instrumented run) with the leading axis left free:
        g may carry K signals for one image (compiled.CompiledBackward.run), where the run had one."""
        return self.op("Reshape", [g, self.const(np.array([-1, *shape[1:]], dtype=np.int64), "shape")])

    def unbroadcast(self, g: str, g_shape: tuple[int, ...], shape: tuple[int, ...]) -> str:
        """The adjoint of broadcasting `shape` up to g_shape (signals.unbroadcast)."""
        if tuple(g_shape) == tuple(shape):
            return g
        extra = len(g_shape) - len(shape)
        if extra < 0:
            raise NotCompilable("a signal of lower rank than its input")
        axes = list(range(extra)) + [extra + i for i, (have, want) in enumerate(zip(g_shape[extra:], shape))
                                     if want == 1 and have != 1]
        if 0 in axes:  # the batch axis is never summed: a computed input always carries it
            raise NotCompilable("an input without the batch axis")
        reduced = self.reduce_sum(g, axes, keepdims=True) if axes else g
        return self.op("Reshape", [reduced, self.const(np.array([0, *shape[1:]], dtype=np.int64), "shape")])


@dataclass(frozen=True)
class Node:
    """What a compiled rule reads: the node, its numpy context (geometry, constants), value shapes."""

    proto: onnx.NodeProto
    ctx: NodeContext
    shapes: Mapping[str, tuple[int, ...]]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    @property
    def x(self) -> str:
        return self.proto.input[0]

    @property
    def y(self) -> str:
        return self.proto.output[0]


Compiled = dict[int, str]
CompiledRule = Callable[[Emitter, Node, str, Signal], Compiled]


def _geometry_attrs(node: Node, kernel: tuple[int, ...]) -> dict[str, Any]:
    """ConvTranspose attributes that undo the window geometry of `node` onto its input's exact size."""
    geometry = window(node.ctx, kernel)
    pads_end, output_padding = [], []
    for n, o, s, k, d, b in zip(geometry.in_size, geometry.out_size, geometry.strides, kernel,
                                geometry.dilations, geometry.begin, strict=True):
        surplus = s * (o - 1) + (k - 1) * d + 1 - b - n  # what ConvTranspose would produce beyond the input
        if surplus >= 0:
            pads_end.append(surplus)
            output_padding.append(0)
        elif -surplus < s:
            pads_end.append(0)
            output_padding.append(-surplus)
        else:
            raise NotCompilable("window geometry without a ConvTranspose equivalent")
    return {"strides": list(geometry.strides), "dilations": list(geometry.dilations), "kernel_shape": list(kernel),
            "pads": [*geometry.begin, *pads_end], "output_padding": output_padding}


def _window_attrs(node: Node) -> dict[str, Any]:
    keep = ("auto_pad", "pads", "strides", "dilations", "group", "kernel_shape")
    return {a.name: helper.get_attribute_value(a) for a in node.proto.attribute if a.name in keep}


@dataclass(frozen=True)
class LinearParts:
    """A constant linear map y = A x (bias excluded) as emitters: A⁺x, A⁺ᵀg and Aᵀg, and A⁻x, A⁻ᵀg with
    A⁻ = A − A⁺ (None where every weight is ≥ 0: pools)."""

    transpose: Callable[[str], str]
    forward_pos: Callable[[str], str]
    transpose_pos: Callable[[str], str]
    forward_neg: Callable[[str], str] | None = None
    transpose_neg: Callable[[str], str] | None = None


def _linear(em: Emitter, node: Node, grad: str, signal: Signal, parts: LinearParts, *, index: int = 0,
            elementwise: bool = False) -> str:
    """The signal into input `index` of y = A x: Aᵀg; x ⊙ A⁺ᵀ(p ⊘ A⁺x) for excitation (linear_signal);
    eEBP's two streams for extended (`_extended`), the parent's sign read from y's response, or from the
    bias-free A x for an `elementwise` rescaling (rules.linear.linear_input)."""
    x = node.proto.input[index]
    if signal == "excitation":
        share = em.safe_divide(grad, parts.forward_pos(x), vanishing=x in em.nonnegative)
        return em.op("Mul", [x, parts.transpose_pos(share)])
    if signal == "extended":
        x = em.response(x)
        parent = _forward(em, parts, x) if elementwise else em.response(node.y)
        return _extended(em, x, grad, parts, parent)
    return parts.transpose(grad)


def _forward(em: Emitter, parts: LinearParts, x: str) -> str:
    """A x = A⁺x + A⁻x."""
    positive = parts.forward_pos(x)
    return positive if parts.forward_neg is None else em.op("Add", [positive, parts.forward_neg(x)])


def _extended(em: Emitter, x: str, grad: str, parts: LinearParts, parent: str) -> str:
    """eEBP at y = A x (rules.linear.extended_signal, Wang et al. 2025 eqs. 3–4), with x = x⁺ + x⁻:
    D⁺ = A⁺x⁺ + A⁻x⁻, D⁻ = A⁻x⁺ + A⁺x⁻, s± = [parent ≷ 0] p ⊘ D±,
    p_x = x⁺ ⊙ (A⁺ᵀs⁺ + A⁻ᵀs⁻) + x⁻ ⊙ (A⁻ᵀs⁺ + A⁺ᵀs⁻).
    Every term of D± has one sign, so D± = 0 makes each of them 0 and the quotient there is never read
    (vanishing). A response known to be ≥ 0 has no x⁻ terms."""
    fp, tp = parts.forward_pos, parts.transpose_pos
    fn, tn = parts.forward_neg, parts.transpose_neg
    signed = x not in em.nonnegative
    x_pos = em.op("Relu", [x]) if signed else x
    x_neg = em.op("Sub", [x, x_pos]) if signed else None

    def plus(*terms: str | None) -> str | None:
        present = [t for t in terms if t is not None]
        return None if not present else present[0] if len(present) == 1 else em.op("Add", present)

    d_pos = plus(fp(x_pos), fn(x_neg) if fn and x_neg else None)
    d_neg = plus(fn(x_pos) if fn else None, fp(x_neg) if x_neg else None)
    up = em.indicator(em.op("GreaterOrEqual", [parent, em.zero()]))
    s_pos = em.safe_divide(em.op("Mul", [grad, up]), d_pos, vanishing=True)
    s_neg = None if d_neg is None else em.safe_divide(em.op("Mul", [grad, em.op("Sub", [em.one(), up])]), d_neg,
                                                      vanishing=True)
    into_pos = plus(tp(s_pos), tn(s_neg) if tn and s_neg else None)
    result = em.op("Mul", [x_pos, into_pos])
    if x_neg is not None:  # x⁻ ⊙ (A⁻ᵀs⁺ + A⁺ᵀs⁻)
        into_neg = plus(tn(s_pos) if tn else None, tp(s_neg) if s_neg else None)
        if into_neg is not None:
            result = em.op("Add", [result, em.op("Mul", [x_neg, into_neg])])
    return result


def _transposed_window(em: Emitter, node: Node, g: str, weight: np.ndarray, group: int) -> str:
    """Wᵀ g for the window operator `node` with kernel `weight` (M, C/group, *k): a Conv with the flipped,
    per-group transposed kernel when every stride is 1 and it has at least WIDE_CONV output channels
    (onnxruntime's blocked Conv is faster than its ConvTranspose there, and slower on a few channels,
    such as the gradient at an RGB input), else a ConvTranspose with the same kernel."""
    kernel = weight.shape[2:]
    geometry = window(node.ctx, kernel)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, geometry.dilations, strict=True)]
    begin = [span - 1 - b for span, b in zip(spans, geometry.begin, strict=True)]
    sizes = zip(geometry.in_size, geometry.out_size, begin, spans, strict=True)
    end = [n - o - b + span - 1 for n, o, b, span in sizes]
    out_channels, group_in = weight.shape[:2]
    if all(s == 1 for s in geometry.strides) and min(begin + end) >= 0 and group * group_in >= WIDE_CONV:
        per_group = weight.reshape(group, out_channels // group, group_in, *kernel).swapaxes(1, 2)
        flipped = per_group.reshape(group * group_in, out_channels // group, *kernel)
        flipped = np.flip(flipped, axis=tuple(range(2, weight.ndim)))
        return em.op("Conv", [g, em.const(np.ascontiguousarray(flipped), "kernel_t")], group=group,
                     dilations=list(geometry.dilations), kernel_shape=list(kernel), pads=[*begin, *end])
    return em.op("ConvTranspose", [g, em.const(weight, "kernel")], group=group, **_geometry_attrs(node, kernel))


def conv(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    weight = node.ctx.weight(1, "kernel")
    group = int(node.ctx.attr("group", 1))
    positive, negative = np.maximum(weight, 0.0), np.minimum(weight, 0.0)

    def forward(kernel: np.ndarray, base: str) -> Callable[[str], str]:
        return lambda x: em.op("Conv", [x, em.const(kernel, base)], **_window_attrs(node))

    return {0: _linear(em, node, grad, signal, LinearParts(
        transpose=lambda g: _transposed_window(em, node, g, weight, group),
        forward_pos=forward(positive, "kernel_pos"),
        transpose_pos=lambda g: _transposed_window(em, node, g, positive, group),
        forward_neg=forward(negative, "kernel_neg"),
        transpose_neg=lambda g: _transposed_window(em, node, g, negative, group)))}


def _dense(em: Emitter, node: Node, grad: str, signal: Signal, weight: np.ndarray, transposed: str | None = None
           ) -> str:
    """y = x @ W with W (in, out) constant; `transposed` names an initializer holding Wᵀ already (Gemm's B)."""
    if grad in em.one_hot and signal != "extended":
        return _dense_one_hot(em, node, grad, signal, weight, transposed)
    positive, negative = em.const(np.maximum(weight, 0.0), "weight_pos"), em.const(np.minimum(weight, 0.0), "weight_neg")
    return _linear(em, node, grad, signal, LinearParts(
        transpose=lambda g: em.op("MatMul", [g, transposed or em.const(weight.T, "weight_t")]),
        forward_pos=lambda x: em.op("MatMul", [x, positive]),
        transpose_pos=lambda g: em.op("Gemm", [g, positive], transB=1),
        forward_neg=lambda x: em.op("MatMul", [x, negative]),
        transpose_neg=lambda g: em.op("Gemm", [g, negative], transB=1)))


def _dense_one_hot(em: Emitter, node: Node, grad: str, signal: Signal, weight: np.ndarray, transposed: str | None
                   ) -> str:
    """`_dense` for a signal with at most one non-zero per row (the seed at a classifier's top layer):
    with k its column and v its value, g_x = v·W[:, k] and p_x = x ⊙ W⁺[:, k] · (v ⊘ x·W⁺[:, k]), so only
    row k of Wᵀ is read (Gather) instead of all of W, which at a wide top layer costs as much as its
    forward product."""
    if len(node.shape(node.x)) != 2:
        raise NotCompilable("a one-hot signal into a batched MatMul")
    k = em.op("ArgMax", [em.op("Abs", [grad])], axis=1, keepdims=0)
    value = em.reduce_sum(grad, [1], keepdims=True)
    if signal != "excitation":
        return em.op("Mul", [value, em.op("Gather", [transposed or em.const(weight.T, "weight_t"), k], axis=0)])
    column = em.op("Gather", [em.const(np.maximum(weight, 0.0).T, "weight_pos_t"), k], axis=0)
    weighted = em.op("Mul", [node.x, column])
    return em.op("Mul", [weighted, em.safe_divide(value, em.reduce_sum(weighted, [1], keepdims=True))])


def gemm(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if node.ctx.attr("transA", 0):
        raise NotCompilable("Gemm with transA")
    b = node.ctx.weight(1, "B matrix")
    trans_b = node.ctx.attr("transB", 0)
    weight = node.ctx.attr("alpha", 1.0) * (b.T if trans_b else b)
    shared = trans_b and node.ctx.attr("alpha", 1.0) == 1.0 and em.share_weights
    return {0: _dense(em, node, grad, signal, weight, node.proto.input[1] if shared else None)}


def matmul(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if not node.ctx.is_constant(1) or node.ctx.is_constant(0):
        raise NotCompilable("MatMul other than x @ W")
    weight = node.ctx.weight(1, "other factor")
    if weight.ndim != 2 or len(node.shape(node.x)) < 2:
        raise NotCompilable("MatMul with a batched or 1-D weight")
    return {0: _dense(em, node, grad, signal, weight)}


def _scale(em: Emitter, node: Node, index: int, grad: str, signal: Signal, factor: np.ndarray) -> str:
    """Input `index` of y = broadcast(x · c) (rules.linear.Scale under linear_input(elementwise=True))."""
    x = node.proto.input[index]
    g_shape, x_shape = node.shape(node.y), node.shape(x)
    if signal == "excitation":
        positive = em.const(np.maximum(factor, 0.0), "scale_pos")
        share = em.safe_divide(grad, em.op("Mul", [x, positive]), vanishing=True)  # c⁺x = 0: c⁺ = 0 or x = 0
        return em.op("Mul", [x, em.unbroadcast(em.op("Mul", [share, positive]), g_shape, x_shape)])
    if signal == "extended":
        def by(values: np.ndarray, base: str) -> tuple[Callable[[str], str], Callable[[str], str]]:
            c = em.const(values, base)
            return (lambda v: em.op("Mul", [v, c]),
                    lambda g: em.unbroadcast(em.op("Mul", [g, c]), g_shape, x_shape))

        forward_pos, transpose_pos = by(np.maximum(factor, 0.0), "scale_pos")
        forward_neg, transpose_neg = by(np.minimum(factor, 0.0), "scale_neg") if np.any(factor < 0) else (None, None)
        parts = LinearParts(transpose=transpose_pos, forward_pos=forward_pos, transpose_pos=transpose_pos,
                            forward_neg=forward_neg, transpose_neg=transpose_neg)
        return _linear(em, node, grad, signal, parts, index=index, elementwise=True)
    scaled = grad if np.all(factor == 1.0) else em.op("Mul", [grad, em.const(factor, "scale")])
    return em.unbroadcast(scaled, g_shape, x_shape)


def arithmetic(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    op, ctx = node.proto.op_type, node.ctx
    if op == "Div" and not ctx.is_constant(1):
        return div_tensors(em, node, grad, signal)
    if not ctx.is_constant(0) and not ctx.is_constant(1):
        return {"Add": add_tensors, "Sub": sub_tensors, "Mul": mul_tensors}[op](em, node, grad, signal)
    i = 0 if ctx.is_constant(1) else 1
    constant = ctx.weight(1 - i, "constant operand")
    if op == "Mul":
        factor = constant
    elif op == "Div":
        factor = 1.0 / constant
    else:
        factor = np.asarray(-1.0 if op == "Sub" and i == 1 else 1.0)
    return {i: _scale(em, node, i, grad, signal, factor)}


def _extended_sum(em: Emitter, node: Node, grad: str, c: float) -> Compiled:
    """eEBP at y = a + c·b, c = ±1, both computed (rules.linear.extended_sum with weights (1, c)):
    D⁺ = Σ_k c_k⁺x_k⁺ + c_k⁻x_k⁻, D⁻ = Σ_k c_k⁻x_k⁺ + c_k⁺x_k⁻, s± = [y ≷ 0] p ⊘ D±,
    p_k = x_k⁺(c_k⁺s⁺ + c_k⁻s⁻) + x_k⁻(c_k⁻s⁺ + c_k⁺s⁻). With c_k = ±1 a term feeds D⁺ with one part of x_k
    and D⁻ with the other: (x⁺, x⁻) for c = 1, (x⁻, x⁺) for c = −1, each times c."""
    g_shape = node.shape(node.y)
    up = em.indicator(em.op("GreaterOrEqual", [em.response(node.y), em.zero()]))
    feeds = []  # (input, its weight, the part feeding D⁺, the part feeding D⁻)
    for index, weight in ((0, 1.0), (1, c)):
        x = em.response(node.proto.input[index])
        positive = em.op("Relu", [x])
        negative = em.op("Sub", [x, positive])
        feeds.append((index, weight, *((positive, negative) if weight > 0 else (negative, positive))))
    combine = "Add" if c > 0 else "Sub"
    d_pos = em.op(combine, [feeds[0][2], feeds[1][2]])
    d_neg = em.op(combine, [feeds[0][3], feeds[1][3]])
    s_pos = em.safe_divide(em.op("Mul", [grad, up]), d_pos, vanishing=True)
    s_neg = em.safe_divide(em.op("Mul", [grad, em.op("Sub", [em.one(), up])]), d_neg, vanishing=True)
    sent = {}
    for index, weight, to_pos, to_neg in feeds:
        share = em.op("Add", [em.op("Mul", [to_pos, s_pos]), em.op("Mul", [to_neg, s_neg])])
        share = share if weight > 0 else em.op("Neg", [share])
        sent[index] = em.unbroadcast(share, g_shape, node.shape(node.proto.input[index]))
    return sent


def add_tensors(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Residual sums: g to both; excitation splits p by the positive parts (rules.linear.add_tensors);
    extended by a⁺, b⁺ where y ≥ 0 and by a⁻, b⁻ where y < 0 (rules.linear.extended_sum, weights 1, 1)."""
    a, b = node.proto.input[0], node.proto.input[1]
    g_shape = node.shape(node.y)
    if signal == "extended":
        return _extended_sum(em, node, grad, 1.0)
    if signal != "excitation":
        return {0: em.unbroadcast(grad, g_shape, node.shape(a)), 1: em.unbroadcast(grad, g_shape, node.shape(b))}
    a_pos, b_pos = em.op("Relu", [a]), em.op("Relu", [b])
    share = em.safe_divide(grad, em.op("Add", [a_pos, b_pos]), vanishing=True)  # a⁺ + b⁺ = 0: both are 0
    return {0: em.unbroadcast(em.op("Mul", [share, a_pos]), g_shape, node.shape(a)),
            1: em.unbroadcast(em.op("Mul", [share, b_pos]), g_shape, node.shape(b))}


def sub_tensors(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """y = a − b, both computed (rules.linear.sub_tensors): gradient (g, −g); excitation: a is the only
    excitatory input, p_a = p where a ≠ 0, p_b = 0; extended: the sum with weights (1, −1), s± = [y ≷ 0] p ⊘ D±,
    D⁺ = a⁺ − b⁻, D⁻ = a⁻ − b⁺, p_a = a⁺s⁺ + a⁻s⁻, p_b = −(b⁺s⁻ + b⁻s⁺)."""
    a, b = node.proto.input[0], node.proto.input[1]
    g_shape, a_shape, b_shape = node.shape(node.y), node.shape(a), node.shape(b)
    if signal == "excitation":
        present = em.op("Sub", [em.one(), em.indicator(em.op("Equal", [a, em.zero()]))])
        return {0: em.unbroadcast(em.op("Mul", [grad, present]), g_shape, a_shape), 1: _nothing(em, node, grad, 1)}
    if signal == "extended":
        return _extended_sum(em, node, grad, -1.0)
    return {0: em.unbroadcast(grad, g_shape, a_shape), 1: em.unbroadcast(em.op("Neg", [grad]), g_shape, b_shape)}


def _gated(em: Emitter, node: Node, grad: str, signal: Signal, index: int, gate: str) -> str:
    """The signal into input `index` of y = x ⊙ s, the gate s read as a fixed scale (rules.linear.mul_tensors,
    div_tensors): gradient g ⊙ s; excitation x ⊙ s⁺ ⊙ (p ⊘ s⁺x), all of p where s⁺x ≠ 0; extended the linear
    rule with the signed weights s."""
    x = node.proto.input[index]
    g_shape, x_shape = node.shape(node.y), node.shape(x)
    if signal == "excitation":
        scaled = em.op("Mul", [x, em.op("Relu", [gate])])
        share = em.safe_divide(grad, scaled, vanishing=True)  # s⁺x = 0: the product below is 0 there
        return em.unbroadcast(em.op("Mul", [scaled, share]), g_shape, x_shape)
    if signal == "extended":
        positive = em.op("Relu", [gate])
        negative = em.op("Sub", [gate, positive])

        def by(factor: str) -> tuple[Callable[[str], str], Callable[[str], str]]:
            return (lambda v: em.op("Mul", [v, factor]),
                    lambda g: em.unbroadcast(em.op("Mul", [g, factor]), g_shape, x_shape))

        (forward_pos, transpose_pos), (forward_neg, transpose_neg) = by(positive), by(negative)
        parts = LinearParts(transpose=transpose_pos, forward_pos=forward_pos, transpose_pos=transpose_pos,
                            forward_neg=forward_neg, transpose_neg=transpose_neg)
        return _linear(em, node, grad, signal, parts, index=index)
    return em.unbroadcast(em.op("Mul", [grad, gate]), g_shape, x_shape)


def _nothing(em: Emitter, node: Node, grad: str, index: int) -> str:
    """A zero signal of input `index`'s shape (with the signal's batch): a gate is no parent neuron."""
    return em.op("Mul", [em.unbroadcast(grad, node.shape(node.y), node.shape(node.proto.input[index])), em.zero()])


def mul_tensors(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """y = a ⊙ b, both computed (squeeze-excitation gates, swish): the product rule for gradients; for the
    excitation kinds the gate (the broadcast factor, else the second) is a fixed scale of the other factor
    and gets no signal (rules.linear.mul_tensors)."""
    a, b = node.proto.input[0], node.proto.input[1]
    if not is_excitation(signal):
        return {0: _gated(em, node, grad, signal, 0, b), 1: _gated(em, node, grad, signal, 1, a)}
    gate = 0 if np.prod(node.shape(a)) < np.prod(node.shape(b)) else 1
    return {1 - gate: _gated(em, node, grad, signal, 1 - gate, node.proto.input[gate]),
            gate: _nothing(em, node, grad, gate)}


def div_tensors(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """y = a / b with b computed (ReduceL2 + Div normalisation): gradients g / b and −g a / b²; for the
    excitation kinds 1/b is a fixed scale of a (safe: 1/0 := 0) and b gets no signal; a constant numerator
    has no excitatory path (rules.linear.div_tensors)."""
    a, b = node.proto.input[0], node.proto.input[1]
    g_shape = node.shape(node.y)
    if is_excitation(signal):
        sent = {1: _nothing(em, node, grad, 1)}
        if not node.ctx.is_constant(0):
            sent[0] = _gated(em, node, grad, signal, 0, em.safe_divide(em.one(), b))
        return sent
    quotient = em.op("Div", [grad, b])
    sent = {1: em.unbroadcast(em.op("Neg", [em.op("Div", [em.op("Mul", [quotient, a]), b])]), g_shape, node.shape(b))}
    if not node.ctx.is_constant(0):
        sent[0] = em.unbroadcast(quotient, g_shape, node.shape(a))
    return sent


def reduce_mean(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """ReduceMean: linear with positive weights 1/n over the reduced axes (rules.linear.reduce_mean)."""
    x_shape, y_shape = node.shape(node.x), node.shape(node.y)
    axes = list(reduce_axes(node.ctx, len(x_shape)))
    if 0 in axes or not axes:
        raise NotCompilable("ReduceMean over the batch axis or over no axis")
    kept = tuple(1 if i in axes else n for i, n in enumerate(x_shape))
    n = float(np.prod([x_shape[i] for i in axes]))

    def spread(g: str) -> str:
        scaled = em.op("Mul", [em.reshape_like(g, kept), em.const(np.float32(1.0 / n), "inverse")])
        return em.op("Expand", [scaled, em.op("Shape", [node.x])])

    def mean(v: str) -> str:
        return em.reshape_like(em.reduce_mean(v, axes), y_shape)

    return {0: _linear(em, node, grad, signal, LinearParts(transpose=spread, forward_pos=mean, transpose_pos=spread))}


def reduce_l2(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """ReduceL2: gradient x ⊙ g / ‖x‖; the excitation kinds split p by each element's share of the squared
    norm, x² ⊙ p / ‖x‖² (rules.normalize.reduce_l2), 0/0 := 0."""
    x_shape = node.shape(node.x)
    axes = list(reduce_axes(node.ctx, len(x_shape)))
    if 0 in axes or not axes:
        raise NotCompilable("ReduceL2 over the batch axis or over no axis")
    g = em.reshape_like(grad, tuple(1 if i in axes else n for i, n in enumerate(x_shape)))
    norm = em.reduce_l2(node.x, axes)
    if is_excitation(signal):
        return {0: em.op("Mul", [em.op("Mul", [node.x, node.x]), em.safe_divide(g, em.op("Mul", [norm, norm]))])}
    return {0: em.op("Mul", [node.x, em.safe_divide(g, norm)])}


def batch_normalization(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    ctx = node.ctx
    if ctx.attr("training_mode", 0):
        raise NotCompilable("training-mode BatchNormalization")
    scale = ctx.weight(1, "scale") / np.sqrt(ctx.weight(4, "variance") + ctx.attr("epsilon", 1e-5))
    factor = scale.reshape((-1,) + (1,) * (len(node.shape(node.x)) - 2))
    return {0: _scale(em, node, 0, grad, signal, factor)}


def _rectified(em: Emitter, node: Node, grad: str, signal: Signal, slope: np.ndarray | float) -> str:
    """activations.rectified: f(x) = x for x > 0, slope·x otherwise (slope 0: Relu), as products with
    indicators: g · ([x > 0] + slope·(1 − [x > 0])) (deconv: the same of g's own sign)."""
    if is_excitation(signal):
        return grad
    # y > 0 exactly where x > 0 for a non-negative slope; reading y leaves the Conv before the rectifier
    # to its only reader, so onnxruntime can still fuse the two in the forward pass.
    sign_of = node.y if np.all(np.asarray(slope) >= 0.0) else node.x
    positive = em.indicator(em.op("Greater", [grad if signal == "deconv" else sign_of, em.zero()]))
    if np.all(np.asarray(slope) == 0.0):
        factor = positive
    else:
        slope = np.asarray(slope, dtype=np.float64)
        factor = em.op("Add", [em.op("Mul", [positive, em.const(1.0 - slope, "one_minus_slope")]),
                               em.const(slope, "slope")])
    gradient = em.op("Mul", [grad, factor])
    if signal == "guided":
        return em.op("Mul", [gradient, em.indicator(em.op("Greater", [grad, em.zero()]))])
    return gradient


def relu(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if node.y in em.pooled_relus:
        return {0: grad}
    return {0: _rectified(em, node, grad, signal, 0.0)}


def leaky_relu(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    return {0: _rectified(em, node, grad, signal, float(node.ctx.attr("alpha", 0.01)))}


def prelu(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    return {0: _rectified(em, node, grad, signal, node.ctx.weight(1, "slope"))}


def clip(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    ctx = node.ctx
    low = float(ctx.weight(1, "min")) if ctx.has_input(1) else -np.inf
    high = float(ctx.weight(2, "max")) if ctx.has_input(2) else np.inf
    if is_excitation(signal):
        return {0: grad}
    inside = em.op("And", [em.op("Greater", [node.x, em.const(np.float32(low), "low")]),
                           em.op("Less", [node.x, em.const(np.float32(high), "high")])])
    gradient = em.op("Mul", [grad, em.indicator(inside)])
    if low != 0.0 or signal == "gradient":
        return {0: gradient}
    if signal == "guided":
        return {0: em.op("Mul", [gradient, em.indicator(em.op("Greater", [grad, em.zero()]))])}
    return {0: em.op("Relu", [grad])}


def sigmoid(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if is_excitation(signal):
        return {0: grad}
    one_minus = em.op("Sub", [em.one(), node.y])
    return {0: em.op("Mul", [grad, em.op("Mul", [node.y, one_minus])])}


def max_pool(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Winner takes all (every signal), the first maximum in kernel order on ties (windows.max_pool).

    The window's T taps are stacked (N, C, T, *out): for non-overlapping 2-D windows by a strided
    grouped Conv with one-hot kernels (exact: each output is one input times 1 plus zeros), else by
    Slices of x padded with −∞. The winner is the first tap equal to the pool's output: with
    m = [tap = y], w = m · [cumsum_T(m) = 1]. The signal, placed in its winner's slot, goes back to
    the input by a grouped ConvTranspose with the same one-hot kernels. (MaxPool's own Indices
    output would do, but onnxruntime computes it ten times slower than the pool itself.)
    """
    if node.ctx.attr("storage_order", 0):
        raise NotCompilable("column-major MaxPool")
    kernel = tuple(int(k) for k in node.ctx.attr("kernel_shape"))
    geometry = window(node.ctx, kernel)
    overlapping = any(s < (k - 1) * d + 1 for s, k, d in zip(geometry.strides, kernel, geometry.dilations, strict=True))
    if node.x in em.relu_before and not is_excitation(signal) and (signal == "gradient" or not overlapping):
        # MaxPool(Relu(v)): the winner's v > 0 exactly where the pool's output y > 0, so the Relu's rule is
        # applied here, on the pooled grid, with y for its input: a quarter of the work at 2×2 windows. Guided
        # and deconv rules also read the sign of the signal, which overlapping windows sum before the Relu
        # sees it: there they stay at the Relu.
        grad = _rectified(em, node, grad, signal, 0.0)  # reads the sign of node.y, the pool's output
        em.pooled_relus.add(node.x)
    channels, rank, taps = node.shape(node.x)[1], len(kernel), int(np.prod(kernel))
    one_hot = np.zeros((channels * taps, 1, taps))
    one_hot[np.arange(channels * taps), 0, np.tile(np.arange(taps), channels)] = 1.0
    one_hot = em.const(one_hot.reshape(channels * taps, 1, *kernel), "one_hot")
    new_axis = em.const(np.array([2], dtype=np.int64), "axis")
    simple = (rank == 2 and geometry.strides == kernel and set(geometry.dilations) == {1}
              and not any(geometry.begin + geometry.end + geometry.extra))
    if simple:
        flat = em.op("Conv", [node.x, one_hot], group=channels, kernel_shape=list(kernel), strides=list(kernel))
        stacked = em.op("Reshape", [flat, em.const(np.array([0, channels, taps, *geometry.out_size], dtype=np.int64),
                                                   "shape")])
    else:
        stacked = em.op("Concat", [em.op("Unsqueeze", [view, new_axis]) for view in _tap_views(em, node, geometry)],
                        axis=2)
    hits = em.indicator(em.op("Equal", [stacked, em.op("Unsqueeze", [node.y, new_axis])]))
    first = em.indicator(em.op("Equal", [em.op("CumSum", [hits, em.const(np.array(2, dtype=np.int64), "axis")]),
                                         em.one()]))
    placed = em.op("Mul", [em.op("Mul", [hits, first]), em.op("Unsqueeze", [grad, new_axis])])
    placed = em.op("Reshape", [placed, em.const(np.array([0, channels * taps, *geometry.out_size], dtype=np.int64),
                                                "shape")])
    return {0: em.op("ConvTranspose", [placed, one_hot], group=channels, **_geometry_attrs(node, kernel))}


def _tap_views(em: Emitter, node: Node, geometry: Any) -> list[str]:
    """Per kernel offset (row-major), its strided view (N, C, *out) of x padded with −∞ (windows.Window.taps)."""
    padded = node.x
    if any(geometry.begin) or any(geometry.end) or any(geometry.extra):
        pads = [0, 0, *geometry.begin, 0, 0, *(e + x for e, x in zip(geometry.end, geometry.extra, strict=True))]
        padded = em.op("Pad", [node.x, em.const(np.array(pads, dtype=np.int64), "pads"),
                               em.const(np.float32(-np.inf), "minus_inf")])
    axes = em.const(np.arange(2, 2 + len(geometry.kernel), dtype=np.int64), "axes")
    return [em.op("Slice", [padded, em.const(np.array([v.start for v in view], dtype=np.int64), "start"),
                            em.const(np.array([v.stop for v in view], dtype=np.int64), "end"), axes,
                            em.const(np.array([v.step for v in view], dtype=np.int64), "step")])
            for view in geometry.taps()]


def _pooled(em: Emitter, node: Node, grad: str, signal: Signal, transpose: Callable[[str], str],
            forward: Callable[[str], str]) -> Compiled:
    """A pool y = A x with weights A ≥ 0: Aᵀg; excitation x ⊙ Aᵀ(p ⊘ y), reading the pool's own output;
    extended the two streams with A⁻ = 0 (`_extended`)."""
    if signal == "extended":
        return {0: _linear(em, node, grad, signal, LinearParts(transpose=transpose, forward_pos=forward,
                                                               transpose_pos=transpose))}
    if signal == "excitation":
        return {0: em.op("Mul", [node.x, transpose(em.safe_divide(grad, node.y))])}
    return {0: transpose(grad)}


def global_average_pool(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    n = float(np.prod(node.shape(node.x)[2:]))

    def spread(g: str) -> str:
        return em.op("Expand", [em.op("Mul", [g, em.const(np.float32(1.0 / n), "inverse")]), em.op("Shape", [node.x])])

    return _pooled(em, node, grad, signal, spread, lambda x: em.op("GlobalAveragePool", [x]))


def average_pool(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Σ_window x / count: the transpose scatters g/count with a depthwise ones kernel."""
    kernel = tuple(node.ctx.attr("kernel_shape"))
    geometry = window(node.ctx, kernel)
    count = WindowMean(geometry, node.shape(node.x), bool(node.ctx.attr("count_include_pad", 0))).count
    inverse = np.divide(1.0, count, out=np.zeros_like(count), where=count != 0)
    channels = node.shape(node.x)[1]
    ones = em.const(np.ones((channels, 1, *kernel)), "ones")
    attrs = _geometry_attrs(node, kernel)
    pool_attrs = {a.name: helper.get_attribute_value(a) for a in node.proto.attribute}

    def scatter(g: str) -> str:
        scaled = em.op("Mul", [g, em.const(inverse, "inverse_count")])
        return em.op("ConvTranspose", [scaled, ones], group=channels, **attrs)

    return _pooled(em, node, grad, signal, scatter, lambda x: em.op("AveragePool", [x], **pool_attrs))


def reshape(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if node.proto.op_type == "Cast" and node.ctx.attr("to") != TensorProto.FLOAT:
        raise NotCompilable("Cast to another type than float32")
    return {0: em.reshape_like(grad, node.shape(node.x))}


def expand(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Expand copies each element: each gets back the sum of its copies' signals (rules.shape.expand)."""
    return {0: em.unbroadcast(grad, node.shape(node.y), node.shape(node.x))}


def transpose(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    rank = len(node.shape(node.x))
    perm = node.ctx.attr("perm") or list(reversed(range(rank)))
    return {0: em.op("Transpose", [grad], perm=[int(i) for i in np.argsort(perm)])}


def concat(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    rank = len(node.shape(node.y))
    axis = int(node.ctx.attr("axis")) % rank
    sizes = [node.shape(name)[axis] for name in node.proto.input]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    axes = em.const(np.array([axis], dtype=np.int64), "axes")
    return {i: em.op("Slice", [grad, em.const(bounds[i : i + 1], "start"), em.const(bounds[i + 1 : i + 2], "end"),
                               axes])
            for i in range(len(sizes))}


def softmax(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if is_excitation(signal):
        return {0: grad}
    rank = len(node.shape(node.y))
    axis = int(node.ctx.attr("axis", -1)) % rank
    weighted = em.reduce_sum(em.op("Mul", [node.y, grad]), [axis], keepdims=True)
    return {0: em.op("Mul", [node.y, em.op("Sub", [grad, weighted])])}


def lp_normalization(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    if is_excitation(signal):
        return {0: grad}
    if int(node.ctx.attr("p", 2)) != 2:
        raise NotCompilable("LpNormalization with p = 1")
    axis = int(node.ctx.attr("axis", -1)) % len(node.shape(node.y))
    along = em.op("Mul", [node.y, em.reduce_sum(em.op("Mul", [node.y, grad]), [axis], keepdims=True)])
    return {0: em.op("Div", [em.op("Sub", [grad, along]), em.reduce_l2(node.x, [axis])])}


def maximum(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Max (LightCNN's max-feature-map): each element's signal to the input holding the maximum, the first
    on ties (input i wins where x_i > x_j for every j < i and x_i ≥ x_j for every j > i), for every
    signal; a constant input's share is dropped (rules.activations.maximum)."""
    names = list(node.proto.input)
    g_shape = node.shape(node.y)
    sent = {}
    for i, name in enumerate(names):
        if node.ctx.is_constant(i):
            continue
        wins = [em.op("Greater" if j < i else "GreaterOrEqual", [name, other])
                for j, other in enumerate(names) if j != i]
        while len(wins) > 1:
            wins = [em.op("And", wins[:2]), *wins[2:]]
        share = em.op("Mul", [grad, em.indicator(wins[0])]) if wins else grad
        sent[i] = em.unbroadcast(share, g_shape, node.shape(name))
    return sent


def slice_(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Slice with unit steps off the batch axis: the signal padded back with zeros to the input's shape
    (rules.shape.slice_ also takes other steps: those fall back to the numpy engine)."""
    ctx, shape = node.ctx, node.shape(node.x)
    starts, ends = ctx.weight(1, "starts"), ctx.weight(2, "ends")
    axes = ctx.weight(3, "axes") if ctx.has_input(3) else np.arange(len(starts))
    steps = ctx.weight(4, "steps") if ctx.has_input(4) else np.ones(len(starts))
    begin, end = [0] * len(shape), [0] * len(shape)
    for start, stop, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = int(axis) % len(shape)
        first, last, stride = slice(int(start), int(stop), int(step)).indices(shape[axis])
        if stride != 1 or axis == 0 or last < first:
            raise NotCompilable("Slice with a step other than 1, on the batch axis, or empty")
        begin[axis], end[axis] = first, shape[axis] - last
    pads = em.const(np.array([*begin, *end], dtype=np.int64), "pads")
    return {0: em.op("Pad", [grad, pads])}


def pad(em: Emitter, node: Node, grad: str, signal: Signal) -> Compiled:
    """Pad in constant mode with non-negative pads off the batch axis: the signal cropped back to the input
    (the padding value is a bias: no signal goes to it; rules.shape.pad)."""
    ctx, shape = node.ctx, node.shape(node.x)
    if ctx.attr("mode", "constant") != "constant":
        raise NotCompilable("Pad in another mode than constant")
    rank = len(shape)
    pads = ctx.weight(1, "pads").astype(int).tolist()
    axes = [int(a) % rank for a in ctx.weight(3, "axes")] if ctx.opset >= 18 and ctx.has_input(3) else list(range(rank))
    begin = {a: pads[k] for k, a in enumerate(axes)}
    end = {a: pads[k + len(axes)] for k, a in enumerate(axes)}
    if min(pads, default=0) < 0 or begin.get(0, 0) or end.get(0, 0):
        raise NotCompilable("Pad with negative pads or on the batch axis")
    cropped = list(range(1, rank))
    starts = [begin.get(a, 0) for a in cropped]
    ends = [begin.get(a, 0) + shape[a] for a in cropped]
    return {0: em.op("Slice", [grad, em.const(np.array(starts, dtype=np.int64), "start"),
                               em.const(np.array(ends, dtype=np.int64), "end"),
                               em.const(np.array(cropped, dtype=np.int64), "axes")])}


def split(em: Emitter, node: Node, grads: list[str], signal: Signal) -> Compiled:
    """Split (multi-output): the outputs' signals concatenated back along the axis (rules.shape.split)."""
    axis = int(node.ctx.attr("axis", 0)) % len(node.shape(node.x))
    if axis == 0:
        raise NotCompilable("Split along the batch axis")
    return {0: em.op("Concat", grads, axis=axis)}


COMPILED_RULES: Mapping[str, CompiledRule] = {
    "Conv": conv, "Gemm": gemm, "MatMul": matmul,
    "Add": arithmetic, "Sub": arithmetic, "Mul": arithmetic, "Div": arithmetic,
    "BatchNormalization": batch_normalization,
    "Relu": relu, "LeakyRelu": leaky_relu, "PRelu": prelu, "Clip": clip, "Sigmoid": sigmoid,
    "MaxPool": max_pool, "GlobalAveragePool": global_average_pool, "AveragePool": average_pool,
    "Flatten": reshape, "Reshape": reshape, "Squeeze": reshape, "Unsqueeze": reshape, "Identity": reshape,
    "Dropout": reshape, "Cast": reshape, "Transpose": transpose, "Concat": concat, "Expand": expand,
    "Softmax": softmax, "LpNormalization": lp_normalization, "Max": maximum, "Slice": slice_, "Pad": pad,
    "ReduceMean": reduce_mean, "ReduceL2": reduce_l2,
}
# Rules of nodes whose outputs all carry signal: rule(em, node, [signal per output], signal).
MULTI_OUTPUT_RULES: Mapping[str, Callable[[Emitter, Node, list[str], Signal], Compiled]] = {"Split": split}


NONNEGATIVE_OUTPUTS = frozenset({"Relu", "Sigmoid", "Softmax"})
KEEP_SIGN = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Identity", "Dropout",
                       "Squeeze", "Unsqueeze", "Transpose", "Concat", "Add", "Cast"})


def nonnegative_tensors(nodes: Sequence[onnx.NodeProto], constants: Mapping[str, np.ndarray]) -> set[str]:
    """Tensors ≥ 0 by construction: outputs of Relu, Sigmoid, Softmax, Clip with a min ≥ 0, and of pools,
    moves and sums of such tensors (their data inputs; shape inputs are constants)."""
    found: set[str] = set()
    for node in nodes:
        if node.op_type in NONNEGATIVE_OUTPUTS:
            found.add(node.output[0])
        elif node.op_type == "Clip" and len(node.input) > 1 and node.input[1] in constants:
            if float(constants[node.input[1]]) >= 0:
                found.add(node.output[0])
        elif node.op_type in KEEP_SIGN:
            data = node.input if node.op_type in ("Concat", "Add") else node.input[:1]
            if all(name in found for name in data):
                found.add(node.output[0])
    return found
