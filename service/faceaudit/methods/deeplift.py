"""DeepLIFT (rescale rule): contributions of each pixel's difference from a reference image to the score's difference.

Math (Shrikumar, Greenside, Kundaje 2017, §3; faceaudit.whitebox.signals, kind deeplift):
    Multipliers m flow down from m = 1 at the score: linear maps pass Wᵀm (as gradients do); an
    elementwise nonlinearity y = f(x) passes m · (f(x) − f(x₀)) / (x − x₀) (the rescale rule,
    §3.5.1; f'(x) where |x − x₀| < 1e-10); max pooling and Max pass m · Δy/Δx to the winner
    (captum's rule). x₀ are the activations of the reference image, run in the same batch.
    C(pixel) = Σ_c Δx_c · m_c at the model input (the preprocessing's per-channel scale cancels:
    Δx = a·Δpixel, m_pixel = a·m_x), a signed map.
    Summation-to-delta: Σ C = s(I) − s(I₀) exactly when every nonlinearity between the input and the
    score is elementwise or a max (ReLU, PReLU, Clip, Sigmoid, MaxPool: VGG, ResNet, LightCNN); the
    metadata reports both sides. Softmax, L2 normalisation and products of computed tensors are
    passed by their gradient (captum does the same for operators without a DeepLIFT rule), which
    makes the sum approximate: embedding models' cosine heads are such a case.
    s: the class logit (any softmax of the spec is left out: DeepLIFT explains the logit's
    difference), or the cosine to the mate minus the cosine to the non-mate.
Reference:
    Shrikumar, Greenside, Kundaje. Learning important features through propagating activation
    differences. ICML 2017. John et al. (survey) §2.1.
Defaults:
    fill=zero: the reference image is black (the paper's choice for images, §4.2; captum's default
    reference 0 is in model-input space: fill=constant with the spec's mean colour reproduces it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request
from faceaudit.methods.gradient import instrument_for
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox import backward
from faceaudit.whitebox.maps import channels_last


@dataclass(frozen=True)
class DeepLiftOptions(FillOptions):
    """The reference image, as a fill of the image (FillOptions)."""


def deeplift(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: DeepLiftOptions = DeepLiftOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """DeepLIFT-rescale contributions of the image's difference from the reference, per pixel."""
    run = Run("deeplift", model, target, options)
    image, target = check_request(model, image, target)
    wb = instrument_for(model, target)
    acts = wb.forward(to_model_input(np.stack([image, options.baseline(image)]), model.spec))
    actual = {name: value[:1] for name, value in acts.values.items()}
    reference = {name: value[1:] for name, value in acts.values.items()}
    scores = np.asarray(acts.values[wb.graph.score], dtype=np.float64).reshape(2, -1)
    if wb.similarity:
        seed = wb.seed(actual, "gradient")
    else:
        seed = np.zeros((1, scores.shape[1]))
        seed[0, target.class_index] = 1.0
    multipliers = backward(wb.graph, actual, seed, "deeplift", reference=reference)[wb.graph.input_name]
    delta = actual[wb.graph.input_name] - reference[wb.graph.input_name]
    contributions = channels_last(delta * multipliers, model.spec.require("layout"))[0]
    values = contributions.sum(axis=-1)
    difference = float((scores[0] - scores[1]) @ seed[0])
    if progress is not None:
        progress(1, 1, "deeplift")
    return run.result(values, acts.stats, signed=True, extra={
        "graph": "instrumented", "folded_batch_norms": wb.folded_batch_norms,
        "summation_to_delta": {"sum_of_contributions": float(contributions.sum()), "score_difference": difference},
    })
