"""Rules of operators that are linear in their signal input: one LinearMap each, five signals.

A LinearMap is y = A x without the bias (biases add nothing to a vector–Jacobian product and are
not part of excitation backprop's normaliser). It offers forward (A x), transpose (Aᵀ g) and its
positive part A⁺ (negative weights set to 0). Then, for every linear operator at once:

    gradient, guided, deconv:  g_x = Aᵀ g_y
    excitation:                p_x = x ⊙ A⁺ᵀ (p_y ⊘ A⁺x),  0/0 := 0       (Zhang et al. 2016, eq. 1–2)

    extended:                  eEBP's two streams (signals.py; Wang et al. 2025 eqs. 3–4), A⁻ = A − A⁺
    lrp_epsilon:               R_x = x ⊙ Aᵀ (R ⊘ (z + ε·sign z)), z the node's output (bias included)
    lrp_alpha_beta:            R_x = x⁺ ⊙ A⁺ᵀs + x⁻ ⊙ A⁻ᵀs,  s = R ⊘ (A⁺x⁺ + A⁻x⁻)
    deeplift:                  as gradient (a linear map's multipliers are its weights)

Excitation conserves mass, Σ p_x = Σ p_y, wherever A⁺x ≠ 0: Σ_j x_j Σ_i A⁺_ij p_i / (A⁺x)_i = Σ_i p_i;
extended wherever the parent's D± ≠ 0. Rules call `linear_input(op, ctx, index, grad, signal)`, which
reads the input's response (gweEBP's ã where the backward pass was given one) and the parents' signs.

Rules here: Gemm, MatMul, Add/Sub/Mul/Div with a constant, BatchNormalization,
GlobalAveragePool, ReduceMean, and Add/Sub/Mul/Div of two computed tensors (`add_tensors`,
`sub_tensors`, `mul_tensors`, `div_tensors`: exact gradients; their excitation rules are documented
there). Convolutions and pools live in `windows.py`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from faceaudit.errors import UnsupportedModel
from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.signals import Signal, is_excitation, safe_divide, unbroadcast

LRP = ("lrp_epsilon", "lrp_alpha_beta")


class LinearMap(Protocol):
    """y = A x (bias excluded): its product, its transpose, and A⁺ for excitation backprop."""

    def forward(self, x: np.ndarray) -> np.ndarray: ...
    def transpose(self, g: np.ndarray) -> np.ndarray: ...
    def positive(self) -> LinearMap: ...


def linear_signal(op: LinearMap, x: np.ndarray, grad: np.ndarray, signal: Signal,
                  parent: np.ndarray | None = None) -> np.ndarray:
    """The signal into x of y = op(x): Aᵀg, x ⊙ A⁺ᵀ(p ⊘ A⁺x) for excitation, or eEBP's two streams for
    extended (signals.py), whose parents are split by the sign of `parent` (the node's output with its
    bias; default the bias-free A x)."""
    if signal == "excitation":
        positive = op.positive()
        return x * positive.transpose(safe_divide(grad, positive.forward(x)))
    if signal == "extended":
        return extended_signal(op, x, grad, op.forward(x) if parent is None else parent)
    return op.transpose(grad)


def extended_signal(op: LinearMap, x: np.ndarray, grad: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """eEBP (Wang et al. 2025 eqs. 3–4) at y = A x, with A⁻ = A − A⁺ so that a LinearMap needs only A and A⁺:

        D⁺ = A⁺x⁺ + A⁻x⁻,  D⁻ = A⁻x⁺ + A⁺x⁻;  s± = [parent ≷ 0] p ⊘ D±;
        p_x = x⁺ ⊙ (A⁺ᵀs⁺ + A⁻ᵀs⁻) + x⁻ ⊙ (A⁻ᵀs⁺ + A⁺ᵀs⁻).

    On x ≥ 0 every x⁻ term is an exact zero, so the result is excitation's x ⊙ A⁺ᵀ(p ⊘ A⁺x) at the
    parents ≥ 0, bit for bit.
    """
    positive = op.positive()
    x_pos, x_neg = np.maximum(x, 0.0), np.minimum(x, 0.0)
    pos_pos, pos_neg = positive.forward(x_pos), positive.forward(x_neg)
    d_pos = pos_pos + (op.forward(x_neg) - pos_neg)
    d_neg = (op.forward(x_pos) - pos_pos) + pos_neg
    up = np.broadcast_to(parent, np.shape(grad)) >= 0
    s_pos, s_neg = safe_divide(np.where(up, grad, 0.0), d_pos), safe_divide(np.where(up, 0.0, grad), d_neg)
    plus_pos, plus_neg = positive.transpose(s_pos), positive.transpose(s_neg)
    minus_pos, minus_neg = op.transpose(s_pos) - plus_pos, op.transpose(s_neg) - plus_neg
    return x_pos * (plus_pos + minus_neg) + x_neg * (minus_pos + plus_neg)


def linear_input(op: LinearMap, ctx: NodeContext, index: int, grad: np.ndarray, signal: Signal, *,
                 elementwise: bool = False) -> np.ndarray:
    """The signal into input `index` of a node that is y = op(x) (+ bias): every rule of a linear map ends here.

    Excitation weighs the input's response (ctx.response: its value, or gweEBP's ã). eEBP splits the
    parents by sign: for a layer of neurons (Conv, Gemm, MatMul, pools) the sign of the node's output,
    bias included (Wang et al. 2025 §2.2: pos-neurons give positive responses); for an `elementwise`
    rescaling (Add/Sub/Mul/Div by a constant, BatchNormalization: input normalisation, biases) the sign
    of the bias-free c·x, so that a shift is no neuron: p passes wherever c·x ≠ 0 instead of being
    lost at every pixel a mean subtraction makes negative."""
    if signal == "excitation":
        return linear_signal(op, ctx.response(index), grad, signal)
    if signal == "extended":
        parent = None if elementwise else ctx.output_response()
        return linear_signal(op, ctx.response(index), grad, signal, parent=parent)
    if signal == "lrp_epsilon":
        z = ctx.output()
        return ctx.input(index) * op.transpose(safe_divide(grad, z + ctx.epsilon * np.where(z >= 0, 1.0, -1.0)))
    if signal == "lrp_alpha_beta":
        return alpha_beta_signal(op, ctx.input(index), grad)
    return op.transpose(grad)


def alpha_beta_signal(op: LinearMap, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """LRP-α1β0 at y = A x: R_x = x⁺ ⊙ A⁺ᵀs + x⁻ ⊙ A⁻ᵀs, s = R ⊘ Σ(x w)⁺ = R ⊘ (A⁺x⁺ + A⁻x⁻), 0/0 := 0."""
    positive = op.positive()
    x_pos, x_neg = np.maximum(x, 0.0), np.minimum(x, 0.0)
    pos_neg = positive.forward(x_neg)
    s = safe_divide(grad, positive.forward(x_pos) + (op.forward(x_neg) - pos_neg))
    plus = positive.transpose(s)
    return x_pos * plus + x_neg * (op.transpose(s) - plus)


def lrp_sum(terms: list[tuple[np.ndarray, float]], grad: np.ndarray, signal: Signal, epsilon: float) -> list[np.ndarray]:
    """LRP at y = Σ_k c_k x_k (residual sums): each term's relevance at y's shape, in proportion to its
    contribution c_k x_k (ε) or to its positive part (α1β0)."""
    parts = [c * np.broadcast_to(x, np.shape(grad)) for x, c in terms]
    if signal == "lrp_epsilon":
        z = sum(parts)
        share = safe_divide(grad, z + epsilon * np.where(z >= 0, 1.0, -1.0))
        return [part * share for part in parts]
    positive = [np.maximum(part, 0.0) for part in parts]
    share = safe_divide(grad, sum(positive))
    return [part * share for part in positive]


class Scale:
    """y = broadcast(x · c) to `out_shape`: Mul/Div by constants, BatchNormalization, Add/Sub biases (c = ±1)."""

    def __init__(self, factor: np.ndarray | float, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        self.factor = np.asarray(factor, dtype=np.float64)
        self.in_shape, self.out_shape = in_shape, out_shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x * self.factor, self.out_shape)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        return unbroadcast(g * self.factor, self.in_shape).reshape(self.in_shape)

    def positive(self) -> Scale:
        return Scale(np.maximum(self.factor, 0.0), self.in_shape, self.out_shape)


class Dense:
    """y = op(x) @ w, op transposing x when `trans_x` (Gemm's transA); w already scaled by alpha."""

    def __init__(self, weight: np.ndarray, trans_x: bool = False) -> None:
        self.weight, self.trans_x = weight, trans_x

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x.T if self.trans_x else x) @ self.weight

    def transpose(self, g: np.ndarray) -> np.ndarray:
        back = g @ self.weight.T
        return back.T if self.trans_x else back

    def positive(self) -> Dense:
        return Dense(np.maximum(self.weight, 0.0), self.trans_x)


class MatMulMap:
    """y = x @ w (constant on the right) or w @ x (on the left), numpy matmul broadcasting; w may be 1-D."""

    def __init__(self, weight: np.ndarray, in_shape: tuple[int, ...], weight_first: bool) -> None:
        self.weight, self.in_shape, self.weight_first = weight, in_shape, weight_first

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.weight @ x if self.weight_first else x @ self.weight

    def transpose(self, g: np.ndarray) -> np.ndarray:
        if self.weight.ndim == 1:  # numpy dropped the vector's axis from the product: restore it
            matrix = self.weight[None, :] if self.weight_first else self.weight[:, None]
            g = g[..., None, :] if self.weight_first else g[..., None]
        else:
            matrix = self.weight
        back = np.swapaxes(matrix, -1, -2) @ g if self.weight_first else g @ np.swapaxes(matrix, -1, -2)
        return unbroadcast(back, self.in_shape).reshape(self.in_shape)

    def positive(self) -> MatMulMap:
        return MatMulMap(np.maximum(self.weight, 0.0), self.in_shape, self.weight_first)


class SpatialMean:
    """y = mean of x over every axis after the second (GlobalAveragePool), keeping the axes."""

    def __init__(self, in_shape: tuple[int, ...]) -> None:
        self.in_shape = in_shape
        self.axes = tuple(range(2, len(in_shape)))
        self.size = int(np.prod(in_shape[2:], dtype=np.int64))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=self.axes, keepdims=True)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        return np.broadcast_to(g / self.size, self.in_shape)

    def positive(self) -> SpatialMean:
        return self


def gemm(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Y = α·op(A)·op(B) + β·C with A computed and B, C constants: linear in A with W = α·op(B)."""
    b = ctx.weight(1, "B matrix")
    weight = ctx.attr("alpha", 1.0) * (b.T if ctx.attr("transB", 0) else b)
    return {0: linear_input(Dense(weight, bool(ctx.attr("transA", 0))), ctx, 0, grad, signal)}


def matmul(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """x @ W or W @ x with W constant (MatMul of two computed tensors has no rule yet)."""
    i = 0 if ctx.is_constant(1) else 1
    weight = ctx.weight(1 - i, "other factor")
    x = ctx.input(i)
    if x.ndim < 2:
        raise UnsupportedModel(f"{ctx.label}: a 1-D computed factor has no batch axis")
    return {i: linear_input(MatMulMap(weight, x.shape, weight_first=i == 1), ctx, i, grad, signal)}


def arithmetic(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Add, Sub, Mul, Div with one constant operand, linear in the other: y = x·c, x/c, x ± c, c − x.

    Two computed operands go to `add_tensors`, `sub_tensors`, `mul_tensors`, `div_tensors`.
    """
    op = ctx.node.op_type
    if not ctx.is_constant(0) and not ctx.is_constant(1):
        return TWO_TENSORS[op](ctx, grad, signal)
    i = 0 if ctx.is_constant(1) else 1
    constant = ctx.weight(1 - i, "constant operand")
    x = ctx.input(i)
    if op == "Div" and i == 1:
        return div_tensors(ctx, grad, signal)  # c / x: a constant numerator, not linear in x
    if op == "Mul":
        factor = constant
    elif op == "Div":
        factor = 1.0 / constant
    else:
        factor = np.asarray(-1.0 if op == "Sub" and i == 1 else 1.0)
    return {i: linear_input(Scale(factor, x.shape, grad.shape), ctx, i, grad, signal, elementwise=True)}


def add_tensors(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = a + b, both computed (residual connections).

    Gradient: g to both (summed over broadcast axes). Excitation: p is split in proportion to each
    input's positive part, p_a = p · a⁺/(a⁺ + b⁺), p_b = p · b⁺/(a⁺ + b⁺), 0/0 := 0, so p_a + p_b = p
    wherever a⁺ + b⁺ > 0 — mass is conserved. On non-negative inputs this is the linear rule with
    weights (1, 1). TorchRay's EltwiseSum passes p unchanged to both inputs, doubling the mass.
    Extended (eEBP): the same sum with weights (1, 1), `extended_sum`: at y ≥ 0 p is split by a⁺, b⁺,
    at y < 0 by a⁻, b⁻ — mass conserved wherever that share's denominator is non-zero.
    LRP (`lrp_sum`): ε splits R by the contributions a, b over a + b + ε·sign; α1β0 by a⁺, b⁺ (as EBP).
    """
    a, b = ctx.input(0), ctx.input(1)
    if not is_excitation(signal):
        return {0: unbroadcast(grad, a.shape).reshape(a.shape), 1: unbroadcast(grad, b.shape).reshape(b.shape)}
    if signal in LRP:
        r_a, r_b = lrp_sum([(a, 1.0), (b, 1.0)], grad, signal, ctx.epsilon)
        return {0: _back(r_a, a.shape), 1: _back(r_b, b.shape)}
    a, b = ctx.response(0), ctx.response(1)
    if signal == "extended":
        p_a, p_b = extended_sum([(a, 1.0), (b, 1.0)], grad, ctx.output_response())
        return {0: _back(p_a, a.shape), 1: _back(p_b, b.shape)}
    a_pos, b_pos = np.maximum(a, 0.0), np.maximum(b, 0.0)
    share = safe_divide(grad, a_pos + b_pos)
    return {0: unbroadcast(share * a_pos, a.shape).reshape(a.shape),
            1: unbroadcast(share * b_pos, b.shape).reshape(b.shape)}


def _back(signal: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return unbroadcast(signal, shape).reshape(shape)


def extended_sum(terms: list[tuple[np.ndarray, float]], grad: np.ndarray, parent: np.ndarray) -> list[np.ndarray]:
    """eEBP at y = Σ_k c_k x_k (constant scalars c_k, tensors x_k broadcast to y): each term's p at y's shape.

    D⁺ = Σ_k c_k⁺x_k⁺ + c_k⁻x_k⁻, D⁻ = Σ_k c_k⁻x_k⁺ + c_k⁺x_k⁻, s± = [y ≷ 0] p ⊘ D±,
    p_k = x_k⁺ (c_k⁺s⁺ + c_k⁻s⁻) + x_k⁻ (c_k⁻s⁺ + c_k⁺s⁻)   (Wang et al. 2025 eqs. 3–4).
    """
    shape = np.shape(grad)
    split = [(np.maximum(np.broadcast_to(x, shape), 0.0), np.minimum(np.broadcast_to(x, shape), 0.0),
              max(c, 0.0), min(c, 0.0)) for x, c in terms]
    d_pos = sum(cp * xp + cn * xn for xp, xn, cp, cn in split)
    d_neg = sum(cn * xp + cp * xn for xp, xn, cp, cn in split)
    up = np.broadcast_to(parent, shape) >= 0
    s_pos, s_neg = safe_divide(np.where(up, grad, 0.0), d_pos), safe_divide(np.where(up, 0.0, grad), d_neg)
    return [xp * (cp * s_pos + cn * s_neg) + xn * (cn * s_pos + cp * s_neg) for xp, xn, cp, cn in split]


def sub_tensors(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = a − b, both computed: gradient (g, −g). Excitation: the linear map with weights (1, −1), whose
    only excitatory input is a: p_a = p where a ≠ 0 (a·p/a), p_b = 0. Extended: `extended_sum` with
    weights (1, −1), where a negative b excites a positive y and a positive b a negative y.
    LRP: `lrp_sum` with the contributions a and −b."""
    a, b = ctx.input(0), ctx.input(1)
    if not is_excitation(signal):
        return {0: _back(grad, a.shape), 1: _back(-grad, b.shape)}
    if signal in LRP:
        r_a, r_b = lrp_sum([(a, 1.0), (b, -1.0)], grad, signal, ctx.epsilon)
        return {0: _back(r_a, a.shape), 1: _back(r_b, b.shape)}
    a, b = ctx.response(0), ctx.response(1)
    if signal == "extended":
        p_a, p_b = extended_sum([(a, 1.0), (b, -1.0)], grad, ctx.output_response())
        return {0: _back(p_a, a.shape), 1: _back(p_b, b.shape)}
    return {0: _back(np.where(np.broadcast_to(a, grad.shape) != 0, grad, 0.0), a.shape), 1: np.zeros(b.shape)}


def _gate_index(ctx: NodeContext) -> int:
    """Which factor of a product of two computed tensors is the gate: the broadcast one (fewer elements,
    a squeeze-excitation gate (N, C, 1, 1)), else the second (exporters write x * sigmoid(x) that way)."""
    return 0 if np.prod(ctx.shape(0)) < np.prod(ctx.shape(1)) else 1


def mul_tensors(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = a ⊙ b, both computed (squeeze-excitation gates, swish). Gradient: the product rule,
    g_a = g ⊙ b, g_b = g ⊙ a (summed over broadcast axes); guided and deconv the same.

    Excitation: the gate s (the broadcast factor, else the second) is read as a fixed positive scale
    of the gated activation x, y = s ⊙ x, a linear map with weights s: p_x = x ⊙ s⁺ ⊙ p / (s⁺ ⊙ x)
    = p wherever s⁺x ≠ 0, so all of p goes to the activation path and mass is conserved there. The
    gate branch gets p = 0: it modulates how much of x passes but is not itself a parent neuron of y
    in EBP's sense (TorchRay does not define the case; an even split would send mass through the
    gate's pooling into every pixel uniformly). Extended: the same fixed scale, signed: the linear
    rule with weights s (`extended_signal`), all of p to x wherever s·x ≠ 0; the gate gets 0.
    """
    a, b = ctx.input(0), ctx.input(1)
    if not is_excitation(signal):
        return {0: _back(grad * b, a.shape), 1: _back(grad * a, b.shape)}
    gate = _gate_index(ctx)
    x, s = (ctx.response(1), a) if gate == 0 else (ctx.response(0), b)
    if signal == "extended":
        p_x = extended_signal(Scale(s, x.shape, grad.shape), x, grad, ctx.output_response())
        return {1 - gate: p_x, gate: np.zeros(s.shape)}
    scale = np.broadcast_to(np.maximum(s, 0.0), grad.shape)
    p_x = _back(np.broadcast_to(x, grad.shape) * scale * safe_divide(grad, scale * x), x.shape)
    return {1 - gate: p_x, gate: np.zeros(s.shape)}


def div_tensors(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = a / b with b computed (normalisation by a computed norm, ReduceL2 + Div). Gradient:
    g_a = g / b, g_b = −g a / b² (summed over broadcast axes); guided and deconv the same.

    Excitation: as `mul_tensors` with the gate 1/b: all of p to the numerator where b > 0 (a positive
    rescaling, which EBP's normaliser cancels, as for LpNormalization), p_b = 0. A constant numerator
    (c / x) has no excitatory path: its x gets p = 0. Extended: the linear rule with the signed scale 1/b.
    """
    b = ctx.input(1)
    if ctx.is_constant(0):
        a = ctx.weight(0, "numerator")
        g_b = -grad * a / b**2 if not is_excitation(signal) else np.zeros(grad.shape)
        return {1: _back(g_b, b.shape)}
    a = ctx.input(0)
    if not is_excitation(signal):
        return {0: _back(grad / b, a.shape), 1: _back(-grad * a / b**2, b.shape)}
    a = ctx.response(0)
    if signal == "extended":
        gate = Scale(safe_divide(np.ones_like(b), b), a.shape, grad.shape)
        p_a = extended_signal(gate, a, grad, ctx.output_response())
        return {0: p_a, 1: np.zeros(b.shape)}
    scale = np.broadcast_to(np.maximum(safe_divide(np.ones_like(b), b), 0.0), grad.shape)
    p_a = _back(np.broadcast_to(a, grad.shape) * scale * safe_divide(grad, scale * a), a.shape)
    return {0: p_a, 1: np.zeros(b.shape)}


TWO_TENSORS = {"Add": add_tensors, "Sub": sub_tensors, "Mul": mul_tensors, "Div": div_tensors}


class AxesMean:
    """y = mean of x over `axes` (ReduceMean), keeping them (the output is reshaped by the caller's shapes)."""

    def __init__(self, in_shape: tuple[int, ...], axes: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        self.in_shape, self.axes, self.out_shape = in_shape, axes, out_shape
        self.kept = tuple(1 if i in axes else n for i, n in enumerate(in_shape))
        self.size = int(np.prod([in_shape[i] for i in axes], dtype=np.int64))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=self.axes, keepdims=True).reshape(self.out_shape)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        return np.broadcast_to(g.reshape(self.kept) / self.size, self.in_shape)

    def positive(self) -> AxesMean:
        return self


def reduce_axes(ctx: NodeContext, rank: int) -> tuple[int, ...]:
    """The axes of a Reduce* node: attribute before opset 18, input from 18; none given: all, or none with
    noop_with_empty_axes."""
    if ctx.opset >= 18:
        axes = ctx.weight(1, "axes").astype(int).tolist() if ctx.has_input(1) else []
    else:
        axes = list(ctx.attr("axes", []) or [])
    if not axes:
        return () if ctx.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted(int(a) % rank for a in axes))


def reduce_mean(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """ReduceMean: linear with positive weights 1/n over the reduced axes (as GlobalAveragePool)."""
    x = ctx.input(0)
    op = AxesMean(x.shape, reduce_axes(ctx, x.ndim), grad.shape)
    return {0: linear_input(op, ctx, 0, grad, signal)}


def batch_normalization(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Inference BatchNormalization: y = s·(x − mean) + β per channel (axis 1), s = γ/√(var + ε).

    Linear in x with the diagonal weight s. Normally folded into the Conv before it
    (instrument.fold_batch_norms); this rule covers the others (after an Add, a Gemm, the input).
    """
    if ctx.attr("training_mode", 0):
        raise UnsupportedModel(f"{ctx.label}: training-mode BatchNormalization has no white-box rule")
    x = ctx.input(0)
    gamma, var = ctx.weight(1, "scale"), ctx.weight(4, "variance")
    scale = gamma / np.sqrt(var + ctx.attr("epsilon", 1e-5))
    factor = scale.reshape((-1,) + (1,) * (x.ndim - 2))
    return {0: linear_input(Scale(factor, x.shape, x.shape), ctx, 0, grad, signal, elementwise=True)}


def global_average_pool(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = mean over the spatial axes: linear with positive weights 1/(H·W)."""
    x = ctx.input(0)
    return {0: linear_input(SpatialMean(x.shape), ctx, 0, grad, signal)}
