"""Rules of elementwise activation functions: Relu, LeakyRelu, PRelu, Clip, Sigmoid; and Max (winner takes all).

    gradient:   g_x = g_y · f'(x)
    guided:     rectifiers: g_y · f'(x) · [g_y > 0]   (Springenberg et al. 2015 §3.4)
    deconv:     rectifiers: the rectifier applied to g_y, f(g_y)   (Zeiler & Fergus 2014 §2.1)
    excitation, extended: p_x = p_y — an activation function passes the winning probability through
                (Zhang et al. 2016 §3: EBP redefines only the linear layers; Wang et al. 2025 §2.2 the same
                for eEBP, whose neurons' signs carry through sign-preserving PReLU/LeakyRelu); LRP the same.
    deeplift:   the rescale rule, m_x = m_y · (f(x) − f(x₀)) / (x − x₀), f'(x) where |x − x₀| < 1e-10
                (Shrikumar et al. 2017 §3.5.1), x₀ from the reference run; Max: to the winner, rescaled.

Rectifiers are Relu, LeakyRelu, PRelu and Clip with min 0 (ReLU6); guided and deconv leave every
other activation at its exact gradient, as captum's GuidedBackprop and Deconvolution do (they
override ReLU modules only).
"""

from __future__ import annotations

import numpy as np

from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.signals import Signal, is_excitation, unbroadcast


NEAR = 1e-10  # |x − x₀| below which the rescale rule takes the derivative (captum's eps)


def rescaled(ctx: NodeContext, grad: np.ndarray, derivative: np.ndarray) -> np.ndarray:
    """DeepLIFT's rescale rule at an elementwise y = f(x): grad · Δy/Δx, `derivative` (grad · f'(x)) where Δx ≈ 0."""
    dx = ctx.input(0) - ctx.reference_input(0)
    near = np.abs(dx) < NEAR
    return np.where(near, derivative, grad * (ctx.output() - ctx.reference_output()) / np.where(near, 1.0, dx))


def rectified(grad: np.ndarray, x: np.ndarray, slope: np.ndarray | float, signal: Signal) -> np.ndarray:
    """The signal through f(x) = x for x > 0, slope·x otherwise (slope 0: Relu); deeplift is the callers'."""
    if is_excitation(signal):
        return grad
    if signal == "deconv":
        return np.where(grad > 0, grad, slope * grad)
    gradient = np.where(x > 0, grad, slope * grad)
    return np.where(grad > 0, gradient, 0.0) if signal == "guided" else gradient


def _rectifier(ctx: NodeContext, grad: np.ndarray, slope: np.ndarray | float, signal: Signal) -> Signals:
    if signal == "deeplift":
        return {0: rescaled(ctx, grad, rectified(grad, ctx.input(0), slope, "gradient"))}
    return {0: rectified(grad, ctx.input(0), slope, signal)}


def relu(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return _rectifier(ctx, grad, 0.0, signal)


def leaky_relu(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return _rectifier(ctx, grad, float(ctx.attr("alpha", 0.01)), signal)


def prelu(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """PRelu with a constant slope (per channel [C, 1, 1] or any shape broadcasting to x)."""
    return _rectifier(ctx, grad, ctx.weight(1, "slope"), signal)


def clip(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Clip(x, lo, hi): f' = 1 on lo < x < hi; bounds from inputs (opset ≥ 11) or attributes."""
    if ctx.opset >= 11:
        low = float(ctx.weight(1, "min")) if ctx.has_input(1) else -np.inf
        high = float(ctx.weight(2, "max")) if ctx.has_input(2) else np.inf
    else:
        low, high = float(ctx.attr("min", -np.inf)), float(ctx.attr("max", np.inf))
    if is_excitation(signal):
        return {0: grad}
    x = ctx.input(0)
    gradient = np.where((x > low) & (x < high), grad, 0.0)
    if signal == "deeplift":
        return {0: rescaled(ctx, grad, gradient)}
    if low != 0.0 or signal == "gradient":
        return {0: gradient}
    return {0: np.where(grad > 0, gradient, 0.0) if signal == "guided" else np.maximum(grad, 0.0)}


def sigmoid(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """σ' = y(1 − y); not a rectifier."""
    if is_excitation(signal):
        return {0: grad}
    y = ctx.output()
    derivative = grad * y * (1.0 - y)
    return {0: rescaled(ctx, grad, derivative) if signal == "deeplift" else derivative}


def maximum(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Max of n tensors (LightCNN's max-feature-map: Max of two halves): winner takes all, for every signal.

    Each output element's signal goes to the input that holds the maximum (the first on ties), summed
    over broadcast axes: the exact gradient, and excitation backprop's winner-takes-all rule as at
    MaxPool (Zhang et al. 2016 §3). A constant input (Max(x, 0)) can win; its share is dropped.
    deeplift: `max_rescaled`.
    """
    inputs = [ctx.input(i) for i in range(len(ctx.node.input))]
    stacked = np.stack([np.broadcast_to(x, grad.shape) for x in inputs])
    if signal == "deeplift":
        references = np.stack([np.broadcast_to(ctx.reference_input(i), grad.shape) for i in range(len(inputs))])
        winner, grad = max_rescaled(stacked, references, grad, ctx.output() - ctx.reference_output())
    else:
        winner = np.argmax(stacked, axis=0)
    return {i: unbroadcast(np.where(winner == i, grad, 0.0), x.shape).reshape(x.shape) for i, x in enumerate(inputs)}


def max_rescaled(candidates: np.ndarray, references: np.ndarray, grad: np.ndarray, dy: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """DeepLIFT at y = max_t x_t (t along axis 0): which t receives the multiplier, and the multiplier.

    The actual input's winner gets m · Δy/Δx when its Δx is not ~0 (captum's rule); otherwise the
    reference's winner does (its Δx then carries all of Δy; if that is ~0 too, Δy is 0 and the
    gradient passes). So Σ_t Δx_t m_t = m Δy exactly, where captum's rule loses Δy whenever the
    actual winner did not change but the reference's maximum sits elsewhere.
    """
    with np.errstate(invalid="ignore"):  # −∞ − (−∞) in padding slots that never win
        delta = candidates - references
    winner, winner_ref = np.argmax(candidates, axis=0), np.argmax(references, axis=0)
    dx = np.take_along_axis(delta, winner[None], axis=0)[0]
    dx_ref = np.take_along_axis(delta, winner_ref[None], axis=0)[0]
    use = np.abs(dx) >= NEAR
    use_ref = ~use & (np.abs(dx_ref) >= NEAR)
    denominator = np.where(use, dx, np.where(use_ref, dx_ref, 1.0))
    return np.where(use_ref, winner_ref, winner), np.where(use | use_ref, grad * dy / denominator, grad)
