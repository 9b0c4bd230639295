"""Rules of operators that only move values: the signal is moved back the same way, for every signal.

Flatten, Reshape, Squeeze, Unsqueeze, Identity and Dropout (inference: identity) keep the memory
order, so the signal is reshaped to the input's shape; Transpose applies the inverse permutation.
Excitation agrees: a permutation is a linear map with 0/1 weights, whose EBP rule moves p unchanged.
"""

from __future__ import annotations

import numpy as np

from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.signals import Signal


def reshape(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return {0: grad.reshape(ctx.shape(0))}


def transpose(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    perm = ctx.attr("perm") or list(reversed(range(grad.ndim)))
    return {0: grad.transpose(np.argsort(perm))}
