"""Rules of normalising operators: Softmax (at the top of classifiers), LpNormalization and ReduceL2 (embeddings).

    Softmax:          g_x = y ⊙ (g_y − Σ_axis y ⊙ g_y)
    LpNormalization:  y = x / ‖x‖_p;  g_x = (g_y − v Σ_axis y ⊙ g_y) / ‖x‖_p,  v = y (p = 2), sign(x) (p = 1)
    ReduceL2:         y = ‖x‖_axes;   g_x = g_y · x / y  (0 where y = 0)

An embedding head written ReduceL2 + Div is handled by this rule and linear.div_tensors: the exact
gradient of x / ‖x‖ by the chain rule, and for excitation all of p to the numerator (the divisor
gets p = 0), the same as LpNormalization.

Excitation passes p through both: a softmax is monotone in its own logit, and dividing by the norm
is a positive rescaling, which EBP's normaliser cancels (Wang et al. 2025 §2.1 fold the probe's norm
into the similarity head this way).
"""

from __future__ import annotations

import numpy as np

from faceaudit.errors import UnsupportedModel
from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.rules.linear import reduce_axes
from faceaudit.whitebox.signals import Signal, is_excitation, safe_divide


def softmax(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Softmax along `axis` (opset ≥ 13); before opset 13 over the axes from `axis` on, flattened."""
    if is_excitation(signal):
        return {0: grad}
    y = ctx.output()
    if ctx.opset >= 13:
        axis = int(ctx.attr("axis", -1))
        return {0: y * (grad - (y * grad).sum(axis=axis, keepdims=True))}
    axis = int(ctx.attr("axis", 1)) % y.ndim
    rows = (int(np.prod(y.shape[:axis], dtype=np.int64)), -1)
    y2, g2 = y.reshape(rows), grad.reshape(rows)
    return {0: (y2 * (g2 - (y2 * g2).sum(axis=1, keepdims=True))).reshape(y.shape)}


def lp_normalization(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    if is_excitation(signal):
        return {0: grad}
    p, axis = int(ctx.attr("p", 2)), int(ctx.attr("axis", -1))
    if p not in (1, 2):
        raise UnsupportedModel(f"{ctx.label}: LpNormalization with p={p} (ONNX allows 1 and 2 only)")
    x, y = ctx.input(0), ctx.output()
    norm = np.linalg.norm(x, ord=p, axis=axis, keepdims=True) if p == 2 else np.abs(x).sum(axis=axis, keepdims=True)
    direction = y if p == 2 else np.sign(x)
    return {0: (grad - direction * (y * grad).sum(axis=axis, keepdims=True)) / norm}


def reduce_l2(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """ReduceL2 over its axes. Excitation (when any p arrives): p split by each element's share of the
    squared norm, p_x = p · x² / Σ x² — the linear rule for y = Σ w x with w = x/‖x‖ at this x, which
    conserves mass."""
    x = ctx.input(0)
    axes = reduce_axes(ctx, x.ndim)
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    y = np.sqrt((x * x).sum(axis=axes, keepdims=True))
    g = grad.reshape(kept)
    if is_excitation(signal):
        return {0: x * x * safe_divide(g, y * y)}
    return {0: x * safe_divide(g, y)}
