"""Rules of elementwise activation functions: Relu, LeakyRelu, PRelu, Clip, Sigmoid; and Max (winner takes all).

    gradient:   g_x = g_y · f'(x)
    guided:     rectifiers: g_y · f'(x) · [g_y > 0]   (Springenberg et al. 2015 §3.4)
    deconv:     rectifiers: the rectifier applied to g_y, f(g_y)   (Zeiler & Fergus 2014 §2.1)
    excitation, extended: p_x = p_y — an activation function passes the winning probability through
                (Zhang et al. 2016 §3: EBP redefines only the linear layers; Wang et al. 2025 §2.2 the same
                for eEBP, whose neurons' signs carry through sign-preserving PReLU/LeakyRelu).

Rectifiers are Relu, LeakyRelu, PRelu and Clip with min 0 (ReLU6); guided and deconv leave every
other activation at its exact gradient, as captum's GuidedBackprop and Deconvolution do (they
override ReLU modules only).
"""

from __future__ import annotations

import numpy as np

from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.signals import Signal, is_excitation, unbroadcast


def rectified(grad: np.ndarray, x: np.ndarray, slope: np.ndarray | float, signal: Signal) -> np.ndarray:
    """The signal through f(x) = x for x > 0, slope·x otherwise (slope 0: Relu)."""
    if is_excitation(signal):
        return grad
    if signal == "deconv":
        return np.where(grad > 0, grad, slope * grad)
    gradient = np.where(x > 0, grad, slope * grad)
    return np.where(grad > 0, gradient, 0.0) if signal == "guided" else gradient


def relu(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return {0: rectified(grad, ctx.input(0), 0.0, signal)}


def leaky_relu(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return {0: rectified(grad, ctx.input(0), float(ctx.attr("alpha", 0.01)), signal)}


def prelu(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """PRelu with a constant slope (per channel [C, 1, 1] or any shape broadcasting to x)."""
    return {0: rectified(grad, ctx.input(0), ctx.weight(1, "slope"), signal)}


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
    if low != 0.0 or signal == "gradient":
        return {0: gradient}
    return {0: np.where(grad > 0, gradient, 0.0) if signal == "guided" else np.maximum(grad, 0.0)}


def sigmoid(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """σ' = y(1 − y); not a rectifier."""
    if is_excitation(signal):
        return {0: grad}
    y = ctx.output()
    return {0: grad * y * (1.0 - y)}


def maximum(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Max of n tensors (LightCNN's max-feature-map: Max of two halves): winner takes all, for every signal.

    Each output element's signal goes to the input that holds the maximum (the first on ties), summed
    over broadcast axes: the exact gradient, and excitation backprop's winner-takes-all rule as at
    MaxPool (Zhang et al. 2016 §3). A constant input (Max(x, 0)) can win; its share is dropped.
    """
    inputs = [ctx.input(i) for i in range(len(ctx.node.input))]
    stacked = np.stack([np.broadcast_to(x, grad.shape) for x in inputs])
    winner = np.argmax(stacked, axis=0)
    return {i: unbroadcast(np.where(winner == i, grad, 0.0), x.shape).reshape(x.shape) for i, x in enumerate(inputs)}
