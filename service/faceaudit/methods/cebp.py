"""Contrastive excitation backprop (cEBP): where the target is excited more than its contrast.

Math (Zhang et al. 2016 §3.3; Castañón et al. 2018 §III eq. 2 and §V-A):
    P = EBP map of the target unit, N = EBP map of the contrast unit (faceaudit.methods.ebp's rule,
    p_x = x ⊙ W⁺ᵀ (p_y ⊘ W⁺x), with the same forward activations).
    form=difference (Castañón et al. §V-A, fig. 6 (c)/(f), the form used for faces):
        C = max(P − N, 0) at the map's layer, summed over channels.
    form=zhang (Zhang et al. §3.3): P and N are propagated only down to the contrast layer, the
        contrast is taken there, c = max(P − N, 0), and c continues down by EBP to the map's layer.
        The positive part at the contrast layer is what makes the layer matter: EBP is linear in its
        seed once the activations are fixed, so without it both forms would agree.
    Contrast unit (classifiers, option `contrast`):
        an int j: class j's unit;
        "others": the mean of every other class's unit, N = 1/(K−1) Σ_{j≠k} P_j (eq. 2), computed
            in one pass by seeding 1/(K−1) at each other class (EBP is linear in its seed);
        "dual": the target's dual unit ō, whose top-layer weights are negated, −w_k (Zhang et al.:
            the "non-zebra" classifier). The top layer is the last Gemm, MatMul or Conv before the
            score; its negation is applied to the backward pass only (the forward is unchanged).
    Embedding models (similarity head of Wang et al. 2025 §2.1, rows mate and non-mate): the target
        is the mate row; the contrast is the non-mate row when a non-mate is given, else the mate
        row's dual (the negated mate embedding). `contrast` must then be "others" or "dual".
    Map: C upsampled bilinearly, smoothed with σ = smooth · image width and normalised to unit mass.
    P and N are not normalised before subtracting: both are winning probabilities already (unit mass
    where EBP conserves it); the dual can have less, all of it lost where −w has no positive weight.
Reference:
    Zhang, Lin, Brandt, Shen, Sclaroff. Top-down neural attention by excitation backprop. ECCV 2016.
    Castañón, Byrne. Visualizing and quantifying discriminative features for face recognition. FG 2018.
    TorchRay's contrastive_excitation_backprop (contrast_layer, classifier_layer) is the zhang form.
Defaults:
    form=difference (the faces form of Castañón et al.); contrast=others (eq. 2);
    contrast_layer=top (zhang form: the input of the top layer, where the dual first differs);
    layer=input; smooth=0.02 (σ = 2 % of the image width, Castañón et al. §III), as `ebp`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import numpy as np
import onnx

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.ebp import MAX_SMOOTH
from faceaudit.methods.gradient import instrumented_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.dataflow import SignalGraph
from faceaudit.whitebox.instrument import Instrumented
from faceaudit.whitebox.compiled import BackwardRun, engine_extra, resolve_layer, score_width, seeded_backward
from faceaudit.whitebox.maps import channels_first, smooth_and_normalise, upsample_bilinear
from faceaudit.whitebox.signals import Signal

FORMS = ("difference", "zhang")
CONTRASTS = ("others", "dual")
TOP_OPS = ("Gemm", "MatMul", "Conv")
Contrast = Union[int, str]  # noqa: UP007 -- the options loader passes values of this annotation through unchanged


def check_contrast(value: object) -> int | str:
    """A class index (an int, or its digits as text from the CLI), "others" or "dual"."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str) and value in CONTRASTS:
        return value
    raise InvalidRequest("contrast", f"{value!r} must be a class index (an integer ≥ 0), 'others' or 'dual'")


def check_map_options(layer: object, smooth: object) -> None:
    if not isinstance(layer, str) or not layer:
        raise InvalidRequest("layer", f"{layer!r} must be a tensor name or 'input'")
    number = isinstance(smooth, (int, float)) and not isinstance(smooth, bool)
    if not number or not (math.isfinite(smooth) and 0 <= smooth <= MAX_SMOOTH):  # type: ignore[operator]
        raise InvalidRequest("smooth", f"{smooth!r} must be a number in 0..{MAX_SMOOTH} (0: no smoothing)")


@dataclass(frozen=True)
class CebpOptions:
    """The form, the contrast unit, the zhang form's contrast layer, and the map's layer and smoothing."""

    form: str = "difference"
    contrast: Contrast = "others"
    contrast_layer: str = "top"
    layer: str = "input"
    smooth: float = 0.02

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise InvalidRequest("form", f"{self.form!r} is not one of {', '.join(FORMS)}")
        object.__setattr__(self, "contrast", check_contrast(self.contrast))
        if not isinstance(self.contrast_layer, str) or not self.contrast_layer:
            raise InvalidRequest("contrast_layer", f"{self.contrast_layer!r} must be a tensor name or 'top'")
        check_map_options(self.layer, self.smooth)


@dataclass(frozen=True)
class Units:
    """The target and contrast seeds at the score (1, K), and the graph the contrast walks (the dual's)."""

    target: np.ndarray
    contrast: np.ndarray
    contrast_graph: SignalGraph
    description: str


def top_layer(graph: SignalGraph) -> tuple[onnx.NodeProto, int, int]:
    """The last Gemm/MatMul/Conv on the path with a constant weight: (node, data input, weight input)."""
    nodes, _ = graph.path()
    for node in reversed(nodes):
        if node.op_type not in TOP_OPS:
            continue
        if node.op_type == "MatMul" and node.input[0] in graph.constants:
            return node, 1, 0
        if node.input[1] in graph.constants:
            return node, 0, 1
    raise InvalidRequest("contrast", "the model has no Gemm, MatMul or Conv with constant weights before the score, "
                                     "so its dual unit is undefined; contrast with a class index or 'others'")


def winner_tensors(graph: SignalGraph) -> tuple[str, ...]:
    """eEBP's target unit: the top layer's output, read as a pos-neuron whatever its sign (methods.eebp);
    none without a top layer."""
    try:
        node, _, _ = top_layer(graph)
    except InvalidRequest:
        return ()
    return (node.output[0],)


def dual_graph(graph: SignalGraph) -> SignalGraph:
    """The graph whose top layer's weights are negated (Zhang's dual unit), for the backward pass only."""
    node, _, weight = top_layer(graph)
    name = node.input[weight]
    return dataclasses.replace(graph, constants={**graph.constants, name: -np.asarray(graph.constants[name])})


def units(wb: Instrumented, width: int, target: ExplainTarget, contrast: int | str) -> Units:
    """Target and contrast seeds for a classifier (class k vs j, others, dual) or the similarity head of
    `width` columns."""
    if wb.similarity:
        if isinstance(contrast, int):
            raise InvalidRequest("contrast", "embedding models contrast the mate with the non-mate (or the mate's "
                                             "dual without one); a class index applies to classifiers")
        if width > 1:
            return Units(np.eye(width)[[0]], np.eye(width)[[1]], wb.graph, "non_mate")
        return Units(np.eye(width)[[0]], np.eye(width)[[0]], dual_graph(wb.graph), "dual of the mate")
    k = int(target.class_index)  # type: ignore[arg-type]
    seed = np.eye(width)[[k]]
    if contrast == "dual":
        return Units(seed, seed, dual_graph(wb.graph), "dual")
    if contrast == "others":
        if width < 2:
            raise InvalidRequest("contrast", "'others' needs a classifier with at least two classes")
        return Units(seed, (1.0 - seed) / (width - 1), wb.graph, "others")
    if contrast >= width or contrast == k:
        raise InvalidRequest("contrast",
                             f"{contrast} must be a class index in 0..{width - 1} other than the target {k}")
    return Units(seed, np.eye(width)[[contrast]], wb.graph, f"class {contrast}")


def contrast_layer(model: PreparedModel, wb: Instrumented, name: str, inputs: np.ndarray) -> str:
    """The zhang form's contrast layer: the top layer's data input for "top", else a tensor below the top layer."""
    node, data, _ = top_layer(wb.graph)
    below_top = node.input[data]
    if name == "top":
        return below_top
    layer = resolve_layer(model, wb, name, inputs)
    _, carrying = dataclasses.replace(wb.graph, score=below_top).path(layer)
    if layer not in carrying:
        raise InvalidRequest("contrast_layer", f"{name!r} is not below the top layer {node.name or node.output[0]!r}, "
                                               f"where the contrast unit differs from the target")
    return layer


# pair(wb, inputs, units, layer): the target's and the contrast's signals at `layer` (EBP or eEBP).
Pair = Callable[[Instrumented, np.ndarray, "Units", str], tuple[np.ndarray, np.ndarray]]
# difference(wb, inputs, units, layer): the target's signal minus the contrast's at `layer`.
Difference = Callable[[Instrumented, np.ndarray, "Units", str], np.ndarray]
# down(wb, inputs, signal, start, layer): a signal at `start` carried on down to `layer`.
Down = Callable[[Instrumented, np.ndarray, np.ndarray, str, str], np.ndarray]


def per_pixel(signal: np.ndarray, layer: str, wb: Instrumented, model: PreparedModel) -> np.ndarray:
    """A (1, ...) signal at `layer` summed over channels: (h, w)."""
    is_input = layer == wb.graph.input_name
    return channels_first(signal, is_input=is_input, layout=model.spec.require("layout"))[0].sum(axis=0)


def finish(values: np.ndarray, model: PreparedModel, smooth: float, method: str) -> np.ndarray:
    """Upsample to the image, smooth, unit mass; a map with no positive mass is reported, not returned empty."""
    height, width = model.spec.require("height"), model.spec.require("width")
    if not values.sum() > 0:
        raise ModelOutputError(f"{method}: the target is nowhere excited more than its contrast (the map is all "
                               "zero); choose another contrast")
    return smooth_and_normalise(upsample_bilinear(values, (height, width)), smooth * width)


def compiled_pair(model: PreparedModel, runs: list[BackwardRun], signal: Signal = "excitation") -> Pair:
    """The target's and the contrast's signals at `layer` (EBP, or eEBP with signal "extended") by
    whitebox.compiled (the numpy engine where a path does not compile), appended to `runs`: both seeds in
    one run sharing the image's forward pass, or two runs when the contrast walks its own graph (the dual's)."""

    def pair(wb: Instrumented, inputs: np.ndarray, found: Units, layer: str) -> tuple[np.ndarray, np.ndarray]:
        winners = winner_tensors(wb.graph) if signal == "extended" else ()
        if found.contrast_graph is wb.graph:
            seeds = np.concatenate([found.target, found.contrast])
            runs.append(seeded_backward(model, wb, inputs, seeds, signal, source=layer, winners=winners))
            return runs[-1].signal[:1], runs[-1].signal[1:]
        runs.append(seeded_backward(model, wb, inputs, found.target, signal, source=layer, winners=winners))
        runs.append(seeded_backward(model, wb, inputs, found.contrast, signal, source=layer,
                                    graph=found.contrast_graph, variant="dual", winners=winners))
        return runs[-2].signal, runs[-1].signal

    return pair


def compiled_difference(model: PreparedModel, runs: list[BackwardRun], signal: Signal = "excitation") -> Difference:
    """P − N at `layer` in one backward pass from the seed target − contrast: with the activations fixed,
    EBP's rule p_x = x ⊙ W⁺ᵀ(p_y ⊘ W⁺x) (and every other excitation rule, eEBP's included: its streams
    split by the sign of the responses, not of p) is linear in p, so the difference of the two signals
    is the signal of the difference. A contrast on its own graph (the dual's, other weights) takes both
    passes of `compiled_pair`."""
    both = compiled_pair(model, runs, signal)

    def difference(wb: Instrumented, inputs: np.ndarray, found: Units, layer: str) -> np.ndarray:
        if found.contrast_graph is not wb.graph:
            p, n = both(wb, inputs, found, layer)
            return p - n
        winners = winner_tensors(wb.graph) if signal == "extended" else ()
        runs.append(seeded_backward(model, wb, inputs, found.target - found.contrast, signal, source=layer,
                                    winners=winners))
        return runs[-1].signal

    return difference


def compiled_down(model: PreparedModel, runs: list[BackwardRun], signal: Signal = "excitation") -> Down:
    """EBP (or eEBP) of a signal at tensor `start` down to `layer` (the same tensor: unchanged), appended to
    `runs`."""

    def down(wb: Instrumented, inputs: np.ndarray, p: np.ndarray, start: str, layer: str) -> np.ndarray:
        if layer == start:
            return p
        graph = dataclasses.replace(wb.graph, score=start)
        try:
            runs.append(seeded_backward(model, wb, inputs, p, signal, source=layer, graph=graph))
        except ValueError as exc:
            raise InvalidRequest("layer", f"{layer!r} is not below the contrast layer {start!r}") from exc
        return runs[-1].signal

    return down


def cebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: CebpOptions = CebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Contrastive EBP map (unit mass) of a class against a contrast, or of a mate against a non-mate."""
    runs: list[BackwardRun] = []
    return contrastive_map("cebp", compiled_difference(model, runs), compiled_down(model, runs), model, image, target,
                           options, progress, runs=runs)


def contrastive_map(
    method: str, difference: Difference, down: Down, model: PreparedModel, image: np.ndarray, target: ExplainTarget,
    options: CebpOptions, progress: Progress | None, *, runs: list[BackwardRun],
) -> SaliencyMap:
    """The cEBP map with `difference` and `down` propagating the signals (EBP here, eEBP in ecebp); `runs`
    collects their backward passes (their forward passes and engines are reported)."""
    run = Run(method, model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    layer = resolve_layer(model, wb, options.layer, inputs)
    found = units(wb, score_width(model, wb, inputs), target, options.contrast)
    extra: dict = {"contrast": found.description, "form": options.form}
    if options.form == "difference":
        contrast = np.maximum(per_pixel(difference(wb, inputs, found, layer), layer, wb, model), 0.0)
    else:
        at = contrast_layer(model, wb, options.contrast_layer, inputs)
        excess = np.maximum(difference(wb, inputs, found, at), 0.0)
        below = down(wb, inputs, excess, at, layer)
        contrast = np.maximum(per_pixel(below, layer, wb, model), 0.0)
        extra.update(contrast_layer=at, mass_at_contrast_layer=float(excess.sum()),
                     mass_at_layer=float(below.sum()))
    values = finish(contrast, model, options.smooth, method)
    if progress is not None:
        progress(1, 1, method)
    extra.update(engine_extra(*runs))
    return run.result(values, [r.stats for r in runs], signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(contrast.shape),
                             "folded_batch_norms": wb.folded_batch_norms, **extra})
