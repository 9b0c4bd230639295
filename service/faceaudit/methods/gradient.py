"""Gradient saliency: how strongly each pixel's intensity moves the score, ∂s/∂pixel.

Math (Simonyan, Vedaldi, Zisserman 2014 §3.1):
    S(x, y) = max_c |∂s/∂I(x, y, c)|                        (reduce=max_abs)
    S(x, y) = Σ_c ∂s/∂I(x, y, c)                            (reduce=sum: signed, the derivative
                                                              with respect to brightening the pixel)
    s is the class score z_k (softmax(z)_k when the spec asks for softmax, its Jacobian included),
    or for an embedding model cos(probe, mate), and cos(probe, mate) − cos(probe, non-mate) with a
    non-mate (the similarity head of faceaudit.whitebox.instrument). I is the RGB image in [0, 255]:
    the gradient includes the preprocessing, ∂x_c/∂I = a_c per model channel (ModelSpec.pixel_affine),
    the BGR reordering and the greyscale luma weights (faceaudit.whitebox.maps.pixel_gradient).
Computation:
    One run of the instrumented model (BatchNormalization folded into its Conv) with the exact
    vector–Jacobian product appended as ONNX nodes (faceaudit.whitebox.compiled, float32), or, for
    a path that does not compile, one forward pass then the numpy rules of faceaudit.whitebox
    (float64; checked against central finite differences through onnxruntime). The map's extra
    says which: "engine": "onnxruntime" or "numpy".
Reference:
    Simonyan, Vedaldi, Zisserman. Deep inside convolutional networks: visualising image
    classification models and saliency maps. ICLR workshop 2014. Castañón et al. 2018 §IV-A use
    the same reduction ("the maximum value over the images' color channels").
Defaults:
    reduce=max_abs (Simonyan et al. §3.1). captum's Saliency(f).attribute(x, target=k, abs=True)
    returns |∂s/∂x| in model-input space; its max over channels equals this map up to the factor a_c
    (the same for every channel under the assumed spec, scale 1/255, std 1).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request, references
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox import Signal, instrument
from faceaudit.whitebox.compiled import BackwardRun, engine_extra, run_backward
from faceaudit.whitebox.instrument import Activations, Instrumented
from faceaudit.whitebox.maps import pixel_gradient

REDUCTIONS = ("max_abs", "sum")


@dataclass(frozen=True)
class GradientOptions:
    """How the three colour channels of the pixel gradient become one value per pixel."""

    reduce: str = "max_abs"

    def __post_init__(self) -> None:
        check_reduction(self.reduce)


def check_reduction(reduce: str) -> None:
    if reduce not in REDUCTIONS:
        raise InvalidRequest("reduce", f"{reduce!r} is not one of {', '.join(REDUCTIONS)}")


def gradient(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: GradientOptions = GradientOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Max over colour channels of |∂s/∂pixel| (or their signed sum) for a class or a mate (and non-mate)."""
    return pixel_signal_map("gradient", "gradient", model, image, target, options.reduce, options, progress)


def instrument_for(model: PreparedModel, target: ExplainTarget) -> Instrumented:
    """The instrumented model; for embeddings with the similarity head of the target's mate (and non-mate)."""
    return instrument(model, references=None if target.class_index is not None else references(model, target))


def instrumented_request(model: PreparedModel, image: np.ndarray, target: ExplainTarget
                         ) -> tuple[ExplainTarget, Instrumented, np.ndarray]:
    """Validate the request, instrument the model (cached per model) and convert the image to model input;
    the compiled backward passes (whitebox.compiled) run the forward pass themselves."""
    image, target = check_request(model, image, target)
    return target, instrument_for(model, target), to_model_input(image[None], model.spec)


def instrumented_forward(
    model: PreparedModel, image: np.ndarray, target: ExplainTarget,
) -> tuple[ExplainTarget, Instrumented, Activations]:
    """Validate the request, instrument the model (cached per model) and run it once on the image."""
    image, target = check_request(model, image, target)
    wb = instrument_for(model, target)
    return target, wb, wb.forward(to_model_input(image[None], model.spec))


def target_scores(wb: Instrumented, values: Mapping[str, np.ndarray], target: ExplainTarget) -> np.ndarray:
    """The score each image's gradient is of (B,): z_k or softmax(z)_k, cos(mate) or cos(mate) − cos(non-mate)."""
    scores = np.asarray(values[wb.graph.score], dtype=np.float64).reshape(len(values[wb.graph.score]), -1)
    if wb.similarity:
        return scores[:, 0] - scores[:, 1] if scores.shape[1] > 1 else scores[:, 0]
    if wb.softmax:
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = exp / exp.sum(axis=1, keepdims=True)
    return scores[:, target.class_index]


def pixel_gradients(
    model: PreparedModel, wb: Instrumented, images: Iterator[np.ndarray], target: ExplainTarget,
) -> Iterator[tuple[np.ndarray, np.ndarray, BackwardRun]]:
    """For each chunk of images (B, H, W, 3) in pixel space: ∂s/∂pixel (B, H, W, 3), the scores (B,) and
    the run (its stats, and the engine that computed it: engine_extra).

    One forward and backward run per chunk, B rows at once (SmoothGrad, Integrated Gradients), on the
    compiled engine where the model's path compiles; `target` must be one that check_request returned.
    """
    for chunk in images:
        found = run_backward(model, wb, to_model_input(chunk, model.spec), "gradient", target.class_index)
        scores = target_scores(wb, {wb.graph.score: found.score}, target)
        yield pixel_gradient(found.signal, model.spec), scores, found


def pixel_signal_map(
    method: str, signal: Signal, model: PreparedModel, image: np.ndarray, target: ExplainTarget, reduce: str,
    options: object, progress: Progress | None,
) -> SaliencyMap:
    """The H×W map of a gradient-like signal at the pixels: gradient, guided backprop, deconvnet."""
    run = Run(method, model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    found = run_backward(model, wb, inputs, signal, target.class_index)
    pixels = pixel_gradient(found.signal, model.spec)[0]
    values = np.abs(pixels).max(axis=-1) if reduce == "max_abs" else pixels.sum(axis=-1)
    if progress is not None:
        progress(1, 1, method)
    return run.result(values, found.stats, signed=reduce == "sum", extra={
        "graph": "instrumented", "folded_batch_norms": wb.folded_batch_norms, **engine_extra(found)})
