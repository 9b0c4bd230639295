"""Rules of operators that are linear in their signal input: one LinearMap each, four signals.

A LinearMap is y = A x without the bias (biases add nothing to a vector–Jacobian product and are
not part of excitation backprop's normaliser). It offers forward (A x), transpose (Aᵀ g) and its
positive part A⁺ (negative weights set to 0). Then, for every linear operator at once:

    gradient, guided, deconv:  g_x = Aᵀ g_y
    excitation:                p_x = x ⊙ A⁺ᵀ (p_y ⊘ A⁺x),  0/0 := 0       (Zhang et al. 2016, eq. 1–2)

Excitation conserves mass, Σ p_x = Σ p_y, wherever A⁺x ≠ 0: Σ_j x_j Σ_i A⁺_ij p_i / (A⁺x)_i = Σ_i p_i.

Rules here: Gemm, MatMul, Add/Sub/Mul/Div with a constant, BatchNormalization,
GlobalAveragePool, and Add of two computed tensors (linear in the pair; its excitation rule splits
p between the two, see `add_tensors`). Convolutions and pools live in `windows.py`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from faceaudit.errors import UnsupportedModel
from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.signals import Signal, safe_divide, unbroadcast


class LinearMap(Protocol):
    """y = A x (bias excluded): its product, its transpose, and A⁺ for excitation backprop."""

    def forward(self, x: np.ndarray) -> np.ndarray: ...
    def transpose(self, g: np.ndarray) -> np.ndarray: ...
    def positive(self) -> LinearMap: ...


def linear_signal(op: LinearMap, x: np.ndarray, grad: np.ndarray, signal: Signal) -> np.ndarray:
    """The signal into x of y = op(x): Aᵀg, or x ⊙ A⁺ᵀ(p ⊘ A⁺x) for excitation."""
    if signal == "excitation":
        positive = op.positive()
        return x * positive.transpose(safe_divide(grad, positive.forward(x)))
    return op.transpose(grad)


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
    return {0: linear_signal(Dense(weight, bool(ctx.attr("transA", 0))), ctx.input(0), grad, signal)}


def matmul(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """x @ W or W @ x with W constant (MatMul of two computed tensors has no rule yet)."""
    i = 0 if ctx.is_constant(1) else 1
    weight = ctx.weight(1 - i, "other factor")
    x = ctx.input(i)
    if x.ndim < 2:
        raise UnsupportedModel(f"{ctx.label}: a 1-D computed factor has no batch axis")
    return {i: linear_signal(MatMulMap(weight, x.shape, weight_first=i == 1), x, grad, signal)}


def arithmetic(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Add, Sub, Mul, Div with one constant operand, linear in the other: y = x·c, x/c, x ± c, c − x.

    Add of two computed tensors goes to `add_tensors`. Division by a computed tensor and Sub/Mul of
    two computed tensors have no rule yet.
    """
    op = ctx.node.op_type
    if not ctx.is_constant(0) and not ctx.is_constant(1):
        if op == "Add":
            return add_tensors(ctx, grad, signal)
        raise UnsupportedModel(f"{ctx.label}: {op} of two tensors computed from the image has no white-box rule yet")
    i = 0 if ctx.is_constant(1) else 1
    constant = ctx.weight(1 - i, "constant operand")
    x = ctx.input(i)
    if op == "Div" and i == 1:
        raise UnsupportedModel(f"{ctx.label}: division by a tensor computed from the image has no white-box rule yet")
    if op == "Mul":
        factor = constant
    elif op == "Div":
        factor = 1.0 / constant
    else:
        factor = np.asarray(-1.0 if op == "Sub" and i == 1 else 1.0)
    return {i: linear_signal(Scale(factor, x.shape, grad.shape), x, grad, signal)}


def add_tensors(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = a + b, both computed (residual connections).

    Gradient: g to both (summed over broadcast axes). Excitation: p is split in proportion to each
    input's positive part, p_a = p · a⁺/(a⁺ + b⁺), p_b = p · b⁺/(a⁺ + b⁺), 0/0 := 0, so p_a + p_b = p
    wherever a⁺ + b⁺ > 0 — mass is conserved. On non-negative inputs this is the linear rule with
    weights (1, 1). TorchRay's EltwiseSum passes p unchanged to both inputs, doubling the mass.
    """
    a, b = ctx.input(0), ctx.input(1)
    if signal != "excitation":
        return {0: unbroadcast(grad, a.shape).reshape(a.shape), 1: unbroadcast(grad, b.shape).reshape(b.shape)}
    a_pos, b_pos = np.maximum(a, 0.0), np.maximum(b, 0.0)
    share = safe_divide(grad, a_pos + b_pos)
    return {0: unbroadcast(share * a_pos, a.shape).reshape(a.shape),
            1: unbroadcast(share * b_pos, b.shape).reshape(b.shape)}


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
    return {0: linear_signal(Scale(factor, x.shape, x.shape), x, grad, signal)}


def global_average_pool(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """y = mean over the spatial axes: linear with positive weights 1/(H·W)."""
    x = ctx.input(0)
    return {0: linear_signal(SpatialMean(x.shape), x, grad, signal)}
