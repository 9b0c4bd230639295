"""Guided Grad-CAM: guided backpropagation at the pixels, weighted by the upsampled Grad-CAM map.

Math (Selvaraju et al. 2017 §3.1, "Guided Grad-CAM"):
    G(x, y) = reduce_c R(x, y, c): guided backpropagation at the pixels (faceaudit.methods.guided_backprop)
    L = ReLU(Σ_k α_k A_k), α_k = 1/(h·w) Σ_{i,j} ∂s/∂A_k(i, j), upsampled bilinearly to H×W
        (faceaudit.methods.gradcam)
    S = G ⊙ L, the pointwise product. Scores s as for `gradient` (class score, softmax if the spec
    asks; cosine to the mate, minus the cosine to the non-mate when one is given).
    Both signals come from one forward pass of the instrumented model: a guided walk to the input
    and a gradient walk to the layer.
Reference:
    Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. Grad-CAM: visual explanations from deep
    networks via gradient-based localization. ICCV 2017. captum's GuidedGradCam(f, layer) multiplies
    the per-channel guided attribution by the upsampled LayerGradCam map (before any channel reduction).
Defaults:
    layer=last_conv (as `gradcam`); reduce=max_abs (as `guided_backprop`: the maximum over colour
    channels of |R|; since L ≥ 0 this equals max_c |R_c · L|, captum's attribution reduced the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.gradcam import class_activation_map
from faceaudit.methods.gradient import check_reduction, instrumented_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import engine_extra, run_backward
from faceaudit.whitebox.maps import pixel_gradient, upsample_bilinear


@dataclass(frozen=True)
class GuidedGradCamOptions:
    """Grad-CAM's layer ("last_conv", "input" or a tensor name) and the guided signal's channel reduction."""

    layer: str = "last_conv"
    reduce: str = "max_abs"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidRequest("layer", f"{self.layer!r} must be a tensor name, 'last_conv' or 'input'")
        check_reduction(self.reduce)


def guided_gradcam(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: GuidedGradCamOptions = GuidedGradCamOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Guided backpropagation ⊙ upsampled Grad-CAM for a class or a mate (and non-mate)."""
    run = Run("guided_gradcam", model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    layer, cam, found = class_activation_map(model, wb, inputs, options.layer, target)
    upsampled = upsample_bilinear(cam, (model.spec.require("height"), model.spec.require("width")))
    guided_run = run_backward(model, wb, inputs, "guided", target.class_index)  # guided backprop at the pixels
    pixels = pixel_gradient(guided_run.signal, model.spec)[0]
    guided = np.abs(pixels).max(axis=-1) if options.reduce == "max_abs" else pixels.sum(axis=-1)
    values = guided * upsampled
    if progress is not None:
        progress(1, 1, "guided_gradcam")
    return run.result(values, [found.stats, guided_run.stats], signed=options.reduce == "sum",
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(cam.shape),
                             "folded_batch_norms": wb.folded_batch_norms, **engine_extra(found, guided_run)})
