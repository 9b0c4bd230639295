"""Grad-CAM++: Grad-CAM with per-position weights from higher-order derivatives of an exponential score.

Math (Chattopadhyay, Sarkar, Howlader, Balasubramanian 2018, eqs. 10, 19):
    With S = exp(Y) (Y the class logit) and a network piecewise linear in A (ReLU), the higher
    derivatives are powers of g = ∂Y/∂A, and
        α_k(i, j) = g_k(i,j)² / (2 g_k(i,j)² + Σ_{a,b} A_k(a,b) · g_k(i,j)³)     (0 where g = 0)
        w_k = Σ_{i,j} α_k(i, j) · relu(g_k(i, j))
        L = ReLU(Σ_k w_k A_k), upsampled bilinearly to the image as Grad-CAM.
    (∂S/∂A = exp(Y)·g; the common factor exp(Y) scales every w_k alike and is left out, as in the
    authors' code.) Y is the logit of the class (before any softmax the spec asks for: the paper's
    exponential stands for it); for embedding models the similarity score of `gradient`.
Reference:
    Chattopadhyay et al. Grad-CAM++: generalized gradient-based visual explanations for deep
    convolutional networks. WACV 2018. John et al. 2021 compare CMS against it (win %).
Defaults:
    layer=last_conv, as `gradcam` (the output of the last spatial Conv, before its ReLU; name the
    ReLU's output to read rectified maps as the authors do). pytorch-grad-cam's GradCAMPlusPlus
    computes the same weights (with a 1e-7 added to the denominator, where we set 0/0 to 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import ModelOutputError
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.gradcam import GradCamOptions
from faceaudit.methods.gradient import instrumented_forward
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox import backward
from faceaudit.whitebox.maps import channels_first, upsample_bilinear
from faceaudit.whitebox.signals import safe_divide


@dataclass(frozen=True)
class GradCamPlusPlusOptions(GradCamOptions):
    """The layer whose feature maps are weighted: "last_conv", "input", or a tensor name."""


def plus_plus_weights(features: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """w_k of eq. 19 from feature maps A (C, h, w) and the logit's gradient g at them (C, h, w)."""
    g2, g3 = grad**2, grad**3
    alpha = safe_divide(g2, 2.0 * g2 + features.sum(axis=(1, 2), keepdims=True) * g3)
    return (alpha * np.maximum(grad, 0.0)).sum(axis=(1, 2))


def gradcam_plus_plus(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: GradCamPlusPlusOptions = GradCamPlusPlusOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Grad-CAM++ map for a class or a mate (and non-mate), upsampled to the image."""
    run = Run("gradcam_plus_plus", model, target, options)
    target, wb, acts = instrumented_forward(model, image, target)
    layer = wb.layer(options.layer, acts.values)
    if wb.similarity:
        seed = wb.seed(acts.values, "gradient")
    else:  # the logit, whatever the spec's softmax: S = exp(Y) is the paper's stand-in for it
        seed = np.zeros((1, np.asarray(acts.values[wb.graph.score]).reshape(1, -1).shape[1]))
        seed[0, target.class_index] = 1.0
    grad = backward(wb.graph, acts.values, seed, "gradient", source=layer)[layer]
    is_input, layout = layer == wb.graph.input_name, model.spec.require("layout")
    features = channels_first(np.asarray(acts.values[layer], dtype=np.float64), is_input=is_input, layout=layout)[0]
    weights = plus_plus_weights(features, channels_first(grad, is_input=is_input, layout=layout)[0])
    cam = np.maximum(np.tensordot(weights, features, axes=1), 0.0)
    if not cam.max() > 0:
        raise ModelOutputError(f"Grad-CAM++ at {layer!r} is empty: no feature map there has positive weighted "
                               "evidence for the target; try another layer (--layer)")
    values = upsample_bilinear(cam, (model.spec.require("height"), model.spec.require("width")))
    if progress is not None:
        progress(1, 1, "gradcam_plus_plus")
    return run.result(values, acts.stats, signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(cam.shape),
                             "folded_batch_norms": wb.folded_batch_norms})
