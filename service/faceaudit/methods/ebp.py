"""Excitation backprop (EBP): the marginal winning probability of each neuron, top-down from the target.

Math (Zhang et al. 2016, eqs. 1–2, as written by Castañón et al. 2018 §III eq. 1 and Wang et al.
2025 §2.1 eqs. 1–2):
    P(a_j | a_i) = Z_i · â_j · w⁺_ji,  Z_i = 1 / Σ_j â_j w⁺_ji;   P(a_j) = Σ_{i parent of j} P(a_j | a_i) P(a_i)
    i.e. at every linear map y = W x:  p_x = x ⊙ W⁺ᵀ (p_y ⊘ W⁺x), 0/0 := 0. Activation functions pass
    p through; MaxPool gives each window's p to its maximum; AveragePool and GlobalAveragePool are
    linear maps with positive weights; a residual Add splits p between its inputs in proportion to
    their positive parts (mass-conserving; faceaudit.whitebox.rules.linear.add_tensors).
    Seed: p = 1 at the target class (classifiers; softmax or not), or at the similarity head's
    probe–mate cosine for embedding models (Wang et al. §2.1: the mate and non-mate embeddings are
    the rows of an appended fully connected layer). A non-mate, if given, is a row of that head but
    gets no seed: contrastive EBP is `cebp`.
    Map: p at the layer, summed over channels, upsampled bilinearly to the image, smoothed with a
    Gaussian of σ = smooth · image width, normalised to sum 1 (Castañón et al. §III).
Reference:
    Zhang, Lin, Brandt, Shen, Sclaroff. Top-down neural attention by excitation backprop. ECCV 2016.
    Castañón, Byrne. Visualizing and quantifying discriminative features for face recognition. FG 2018.
    Wang et al. Gradient-weighted extended excitation backprop for embedding networks. 2025.
Caveat:
    EBP assumes non-negative activations (ReLU networks). On networks with negative activations
    (PReLU, no ReLU before the embedding, mean-subtracted inputs) the rule still conserves mass but
    individual values can be negative; `eebp` (Wang et al. §2.2) treats negative neurons properly.
Defaults:
    layer=input (the model input; TorchRay's `saliency_layer` names an intermediate layer instead);
    smooth=0.02 (σ = 2 % of the image width, 4.5 px at 224 px: Castañón et al. §III); smooth=0 turns
    smoothing off. Gaussian borders reflect (scipy's default), which keeps the mass inside the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.gradient import instrumented_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import engine_extra, resolve_layer, run_backward
from faceaudit.whitebox.maps import channels_first, smooth_and_normalise, upsample_bilinear

MAX_SMOOTH = 0.5  # σ as a fraction of the image width; beyond it the map is a blur of the whole image


@dataclass(frozen=True)
class EbpOptions:
    """Where the map is read ("input", or a tensor name) and σ of its smoothing as a fraction of the width."""

    layer: str = "input"
    smooth: float = 0.02

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidRequest("layer", f"{self.layer!r} must be a tensor name or 'input'")
        number = isinstance(self.smooth, (int, float)) and not isinstance(self.smooth, bool)
        if not number or not (math.isfinite(self.smooth) and 0 <= self.smooth <= MAX_SMOOTH):
            raise InvalidRequest("smooth", f"{self.smooth!r} must be a number in 0..{MAX_SMOOTH} (0: no smoothing)")


def ebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: EbpOptions = EbpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Excitation backprop map (unit mass) for a class, or for the match to a mate."""
    run = Run("ebp", model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    layer = resolve_layer(model, wb, options.layer, inputs)
    found = run_backward(model, wb, inputs, "excitation", target.class_index, source=layer)
    probability = found.signal
    is_input = layer == wb.graph.input_name
    per_pixel = channels_first(probability, is_input=is_input, layout=model.spec.require("layout"))[0].sum(axis=0)
    height, width = model.spec.require("height"), model.spec.require("width")
    values = smooth_and_normalise(upsample_bilinear(per_pixel, (height, width)), options.smooth * width)
    if progress is not None:
        progress(1, 1, "ebp")
    return run.result(values, found.stats, signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(per_pixel.shape),
                             "mass_at_layer": float(probability.sum()), "folded_batch_norms": wb.folded_batch_norms,
                             **engine_extra(found)})
