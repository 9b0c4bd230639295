"""Rules of sliding-window operators: Conv, MaxPool, AveragePool, for any number of spatial axes.

Every window operator is evaluated tap by tap: for each kernel offset t (kh·kw of them for a 2-D
kernel), the strided view of the padded input that offset reads is one (N, C, *out) array, and
the operator is a sum over taps of per-tap products. The transpose adds each tap's contribution
back into the same strided view. Loops run over kernel taps only, never over pixels; every tap
is one vectorised numpy operation (a batched matrix product for Conv).

Geometry (ONNX operator spec): pads [b_1..b_d, e_1..e_d]; auto_pad SAME_UPPER/SAME_LOWER pad by
total = (out − 1)·s + (k − 1)·d + 1 − in, the odd pixel at the end (UPPER) or the beginning
(LOWER); VALID pads nothing. The output size is read from the output tensor itself, so pools
with ceil_mode get the extra end padding their last window needs (taken as "not counted" by
AveragePool and −∞ by MaxPool, as onnxruntime computes them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.errors import UnsupportedModel
from faceaudit.whitebox.rules.activations import max_rescaled
from faceaudit.whitebox.rules.base import NodeContext, Signals
from faceaudit.whitebox.rules.linear import linear_input
from faceaudit.whitebox.signals import Signal, safe_divide


@dataclass(frozen=True)
class Window:
    """Where each output position of a window operator reads its padded input."""

    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]  # explicit padding before each spatial axis
    end: tuple[int, ...]  # explicit padding after
    extra: tuple[int, ...]  # beyond `end`: the room the last window of a ceil_mode pool reaches into

    def taps(self) -> Iterator[tuple[slice, ...]]:
        """Per kernel offset (row-major, as weights are laid out), its strided view of the padded input."""
        for offset in itertools.product(*(range(k) for k in self.kernel)):
            yield tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                        for o, d, s, n in zip(offset, self.dilations, self.strides, self.out_size, strict=True))

    def pad(self, x: np.ndarray, value: float, extra_value: float | None = None) -> np.ndarray:
        """x padded on its spatial axes: `value` in the explicit pads, `extra_value` (default: value) beyond."""
        lead = [(0, 0)] * (x.ndim - len(self.in_size))
        padded = np.pad(x, lead + list(zip(self.begin, self.end, strict=True)), constant_values=value)
        beyond = value if extra_value is None else extra_value
        return np.pad(padded, lead + [(0, e) for e in self.extra], constant_values=beyond)

    def padded_shape(self, lead: tuple[int, ...]) -> tuple[int, ...]:
        sizes = zip(self.in_size, self.begin, self.end, self.extra, strict=True)
        return (*lead, *(n + b + e + x for n, b, e, x in sizes))

    def crop(self, padded: np.ndarray) -> np.ndarray:
        lead = (slice(None),) * (padded.ndim - len(self.in_size))
        return padded[(*lead, *(slice(b, b + n) for b, n in zip(self.begin, self.in_size, strict=True)))]


def window(ctx: NodeContext, kernel: tuple[int, ...]) -> Window:
    """The geometry of `ctx`'s node from its attributes and its input and output shapes."""
    in_size, out_size = ctx.shape(0)[2:], ctx.output().shape[2:]
    rank = len(in_size)
    strides = tuple(ctx.attr("strides", [1] * rank))
    dilations = tuple(ctx.attr("dilations", [1] * rank))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(0, (o - 1) * s + k - n) for o, s, k, n in zip(out_size, strides, span, in_size, strict=True)]
        small = [t // 2 for t in total]
        large = [t - h for t, h in zip(total, small, strict=True)]
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID":
        begin = end = [0] * rank
    else:
        pads = list(ctx.attr("pads", [0] * 2 * rank))
        begin, end = pads[:rank], pads[rank:]
    if min(begin + end, default=0) < 0:
        raise UnsupportedModel(f"{ctx.label}: negative pads have no white-box rule")
    extra = [max(0, (o - 1) * s + k - (n + b + e))
             for o, s, k, n, b, e in zip(out_size, strides, span, in_size, begin, end, strict=True)]
    return Window(tuple(in_size), tuple(out_size), kernel, strides, dilations, tuple(begin), tuple(end), tuple(extra))


class ConvMap:
    """y = W ∗ x (no bias), grouped: output channel m reads input group m // (M / groups)."""

    def __init__(self, weight: np.ndarray, groups: int, geometry: Window, in_shape: tuple[int, ...]) -> None:
        self.weight, self.groups, self.geometry, self.in_shape = weight, groups, geometry, in_shape
        out_channels, group_in = weight.shape[:2]
        # (G, M/G, C/G, taps): one (M/G × C/G) matrix per group and kernel offset.
        self._taps = weight.reshape(groups, out_channels // groups, group_in, -1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, positions = len(x), int(np.prod(self.geometry.out_size, dtype=np.int64))
        padded = self.geometry.pad(x, 0.0)
        out = np.zeros((n, *self._taps.shape[:2], positions))
        for t, view in enumerate(self.geometry.taps()):
            columns = padded[(slice(None), slice(None), *view)].reshape(n, self.groups, -1, positions)
            out += self._taps[..., t] @ columns
        return out.reshape(n, -1, *self.geometry.out_size)

    def transpose(self, g: np.ndarray) -> np.ndarray:
        n = len(g)
        rows = g.reshape(n, *self._taps.shape[:2], -1)
        padded = np.zeros(self.geometry.padded_shape(self.in_shape[:2]))
        for t, view in enumerate(self.geometry.taps()):
            back = np.swapaxes(self._taps[..., t], -1, -2) @ rows
            padded[(slice(None), slice(None), *view)] += back.reshape(n, -1, *self.geometry.out_size)
        return self.geometry.crop(padded)

    def positive(self) -> ConvMap:
        return ConvMap(np.maximum(self.weight, 0.0), self.groups, self.geometry, self.in_shape)


class WindowMean:
    """AveragePool: y = Σ_window x / count, count per output position by count_include_pad."""

    def __init__(self, geometry: Window, in_shape: tuple[int, ...], include_pad: bool) -> None:
        self.geometry, self.in_shape = geometry, in_shape
        counted = geometry.pad(np.ones(geometry.in_size), 1.0 if include_pad else 0.0, 0.0)
        self.count = np.sum([counted[view] for view in geometry.taps()], axis=0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        padded = self.geometry.pad(x, 0.0)
        lead = (slice(None),) * 2
        return np.sum([padded[(*lead, *view)] for view in self.geometry.taps()], axis=0) / self.count

    def transpose(self, g: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.geometry.padded_shape(self.in_shape[:2]))
        share = safe_divide(g, self.count)
        for view in self.geometry.taps():
            padded[(slice(None), slice(None), *view)] += share
        return self.geometry.crop(padded)

    def positive(self) -> WindowMean:
        return self


def conv(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """Conv: linear in x with the constant kernel W (groups, depthwise, strides, dilations, pads, auto_pad)."""
    weight = ctx.weight(1, "kernel")
    x = ctx.input(0)
    op = ConvMap(weight, int(ctx.attr("group", 1)), window(ctx, weight.shape[2:]), x.shape)
    return {0: linear_input(op, ctx, 0, grad, signal)}


def average_pool(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """AveragePool: linear with positive weights 1/count (count_include_pad, ceil_mode, dilations)."""
    x = ctx.input(0)
    geometry = window(ctx, tuple(ctx.attr("kernel_shape")))
    op = WindowMean(geometry, x.shape, bool(ctx.attr("count_include_pad", 0)))
    return {0: linear_input(op, ctx, 0, grad, signal)}


def max_pool(ctx: NodeContext, grad: np.ndarray, signal: Signal) -> Signals:
    """MaxPool: each output's signal goes to its window's maximum (the first one on ties).

    The same for every signal: it is the gradient, and for excitation backprop and LRP the
    winner-takes-all rule (Zhang et al. 2016 §3: max pooling passes p to the winning neuron);
    deeplift: activations.max_rescaled (Δy / Δx of the winner, or of the reference's winner).
    """
    x = ctx.input(0)
    geometry = window(ctx, tuple(ctx.attr("kernel_shape")))
    padded = geometry.pad(x, -np.inf)
    lead = (slice(None),) * 2
    views = list(geometry.taps())
    candidates = np.stack([padded[(*lead, *view)] for view in views])
    if signal == "deeplift":
        reference = geometry.pad(ctx.reference_input(0), -np.inf)
        references = np.stack([reference[(*lead, *view)] for view in views])
        winner, grad = max_rescaled(candidates, references, grad, ctx.output() - ctx.reference_output())
    else:
        winner = np.argmax(candidates, axis=0)
    back = np.zeros(padded.shape)
    for t, view in enumerate(views):
        back[(*lead, *view)] += np.where(winner == t, grad, 0.0)
    return {0: geometry.crop(back)}
