"""Rules of operators that only move values: the signal is moved back the same way, for every signal.

Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout (inference: identity) and float-to-float
Cast keep the memory order, so the signal is reshaped to the input's shape; Transpose applies the
inverse permutation; Expand copies each element, so each gets back the sum of its copies' signals
(torch's F.normalize exports the norm as ReduceL2, Clip, Expand, Div); Concat splits the signal into its inputs' blocks, Split concatenates its
outputs' signals; Slice scatters the signal back into zeros, Pad (constant mode) crops it.
Excitation agrees: each is a linear map with 0/1 weights (each output reads at most one input
element), whose EBP rule moves p unchanged; a padded constant is a bias, not a neuron.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from faceaudit.errors import UnsupportedModel
from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.signals import Signal, unbroadcast


def reshape(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return {0: grad.reshape(ctx.shape(0))}


def expand(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    return {0: unbroadcast(grad, ctx.shape(0)).reshape(ctx.shape(0))}


def transpose(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    perm = ctx.attr("perm") or list(reversed(range(grad.ndim)))
    return {0: grad.transpose(np.argsort(perm))}


def concat(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Concat along `axis`: each input gets its own block of the signal back (constant inputs included,
    the walk ignores those)."""
    axis = int(ctx.attr("axis")) % grad.ndim
    bounds = np.cumsum([ctx.shape(i)[axis] for i in range(len(ctx.node.input))])[:-1]
    return dict(enumerate(np.split(grad, bounds, axis=axis)))


def split(ctx: NodeContext, grads: list[np.ndarray | None], signal: Signal) -> Signals:
    """Split (multi-output): the outputs' signals concatenated back along `axis`, zeros for unused outputs."""
    shape = ctx.shape(0)
    axis = int(ctx.attr("axis", 0)) % len(shape)
    parts = [np.zeros(np.shape(ctx.output(i))) if g is None else g for i, g in enumerate(grads)]
    return {0: np.concatenate(parts, axis=axis).reshape(shape)}


def _slice_index(ctx: NodeContext, rank: int) -> tuple[slice, ...]:
    """The numpy index of a Slice node; ONNX's clamping of starts/ends is Python's slice semantics."""
    if ctx.opset >= 10:
        starts, ends = ctx.weight(1, "starts"), ctx.weight(2, "ends")
        axes = ctx.weight(3, "axes") if ctx.has_input(3) else np.arange(len(starts))
        steps = ctx.weight(4, "steps") if ctx.has_input(4) else np.ones(len(starts))
    else:
        starts, ends = np.asarray(ctx.attr("starts")), np.asarray(ctx.attr("ends"))
        axes = np.asarray(ctx.attr("axes", list(range(len(starts)))))
        steps = np.ones(len(starts))
    index = [slice(None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis) % rank] = slice(int(start), int(end), int(step))
    return tuple(index)


def slice_(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Slice (any steps, negative ones included): the signal scattered back into zeros at the sliced positions."""
    shape = ctx.shape(0)
    back = np.zeros(shape)
    back[_slice_index(ctx, len(shape))] = grad  # basic slicing never repeats an element: no accumulation needed
    return {0: back}


def pad(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Pad in constant mode: the signal cropped back to the input (negative pads, which crop, are zero-padded).

    The padding value is a bias: it adds nothing to a gradient and is no neuron for excitation backprop.
    Reflect, edge and wrap modes have no rule yet.
    """
    mode = ctx.attr("mode", "constant")
    if mode != "constant":
        raise UnsupportedModel(f"{ctx.label}: Pad in mode {mode!r} has no white-box rule (constant mode only)")
    shape = ctx.shape(0)
    rank = len(shape)
    pads = ctx.weight(1, "pads").astype(int).tolist() if ctx.opset >= 11 else list(ctx.attr("pads"))
    axes = list(range(rank))
    if ctx.opset >= 18 and ctx.has_input(3):
        axes = [int(a) % rank for a in ctx.weight(3, "axes")]
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begin[axis], end[axis] = pads[k], pads[k + len(axes)]
    crop = tuple(slice(max(b, 0), n - max(e, 0)) for b, e, n in zip(begin, end, grad.shape, strict=True))
    restore = [(max(-b, 0), max(-e, 0)) for b, e in zip(begin, end, strict=True)]
    return {0: np.pad(grad[crop], restore)}


FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})


def cast(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Cast between floating-point types: the identity for every signal; any other cast is refused."""
    to = int(ctx.attr("to"))
    if to not in FLOAT_TYPES:
        raise UnsupportedModel(f"{ctx.label}: Cast to {TensorProto.DataType.Name(to)} on the way to the score has no "
                               "derivative; white-box rules pass only float-to-float casts")
    return {0: grad.reshape(ctx.shape(0))}
