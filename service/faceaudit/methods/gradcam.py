"""Grad-CAM: a layer's feature maps weighted by the spatial mean of the score's gradient, rectified.

Math (Selvaraju et al. 2017, eqs. 1–2):
    α_k = 1/(h·w) Σ_{i,j} ∂s/∂A_k(i, j)
    L = ReLU(Σ_k α_k A_k), upsampled bilinearly (half-pixel centres) from h×w to the image size.
    A is the layer's feature map (N, C, h, w); s as for `gradient` (class score, softmax if the spec
    asks; cosine to the mate, minus the cosine to the non-mate when one is given — Grad-CAM for
    embedding networks with a similarity score, Wang et al. 2025 §4.2.2).
Reference:
    Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. Grad-CAM: visual explanations from deep
    networks via gradient-based localization. ICCV 2017. John et al. (survey) §2.3.
Defaults:
    layer=last_conv: the output of the last Conv whose output has more than one spatial position
    (after its BatchNormalization when that is folded into it), the paper's "last convolutional
    layer". Any tensor between the input and the score can be named instead ("input" for the model
    input). The default reads A before the ReLU that usually follows the convolution, where
    Selvaraju et al. and pytorch-grad-cam read the rectified maps: name the ReLU's output with
    `layer` for that. captum: LayerGradCam(f, conv_module).attribute(x, target=k,
    relu_attributions=True) then LayerAttribution.interpolate(map, (H, W), "bilinear") computes the
    same map at the Conv; captum's interpolate uses align_corners=False, as here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.gradient import instrumented_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import BackwardRun, engine_extra, resolve_layer, run_backward
from faceaudit.whitebox.instrument import Instrumented
from faceaudit.whitebox.maps import channels_first, upsample_bilinear


@dataclass(frozen=True)
class GradCamOptions:
    """The layer whose feature maps are weighted: "last_conv", "input", or a tensor name."""

    layer: str = "last_conv"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidRequest("layer", f"{self.layer!r} must be a tensor name, 'last_conv' or 'input'")


def class_activation_map(
    model: PreparedModel, wb: Instrumented, inputs: np.ndarray, layer_name: str, target: ExplainTarget,
) -> tuple[str, np.ndarray, BackwardRun]:
    """The layer read, relu(Σ_k α_k A_k) at it (h, w), α_k the spatial mean of ∂score/∂A_k, and the
    backward run that gave A and ∂score/∂A (compiled, or the numpy engine where the path does not compile).
    A map with no positive value (no feature map carries positive weighted evidence) is an
    error, not an empty map: another layer or the gradient method may still explain the target.
    """
    layer = resolve_layer(model, wb, layer_name, inputs)
    found = run_backward(model, wb, inputs, "gradient", target.class_index, source=layer)
    is_input, layout = layer == wb.graph.input_name, model.spec.require("layout")
    features = channels_first(found.activations, is_input=is_input, layout=layout)[0]
    weights = channels_first(found.signal, is_input=is_input, layout=layout)[0].mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(weights, features, axes=1), 0.0)
    if not cam.max() > 0:
        raise ModelOutputError(f"Grad-CAM at {layer!r} is empty: no feature map there has positive weighted "
                               "evidence for the target; try another layer (--layer) or the gradient method")
    return layer, cam, found


def gradcam(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: GradCamOptions = GradCamOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Grad-CAM map for a class or a mate (and non-mate), upsampled to the image."""
    run = Run("gradcam", model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    layer, cam, found = class_activation_map(model, wb, inputs, options.layer, target)
    values = upsample_bilinear(cam, (model.spec.require("height"), model.spec.require("width")))
    if progress is not None:
        progress(1, 1, "gradcam")
    return run.result(values, found.stats, signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(cam.shape),
                             "folded_batch_norms": wb.folded_batch_norms, **engine_extra(found)})
