"""Extended excitation backprop (eEBP): EBP that also explains neurons with negative responses.

Math (Wang et al. 2025 §2.2, eqs. 3–4): a neuron a_i with a positive response (Θ⁺) is excited by
positive children through w⁺ and by negative children through w⁻; a negative one (Θ⁻) by positive
children through w⁻ and by negative children through w⁺. P(a_j) = P⁺(a_j) + P⁻(a_j):
    P⁺(a_j) = Σ_{i∈Θ⁺} Z_i⁺ w±_ji â_j P(a_i),   1/Z_i⁺ = Σ_{j≥0} w⁺_ji â_j + Σ_{j<0} w⁻_ji â_j     (3)
    P⁻(a_j) = Σ_{i∈Θ⁻} Z_i⁻ w∓_ji â_j P(a_i),   1/Z_i⁻ = Σ_{j≥0} w⁻_ji â_j + Σ_{j<0} w⁺_ji â_j     (4)
    (w± = w⁺ for â_j ≥ 0, w⁻ for â_j < 0; w∓ the other way round). In matrix form at y = W x
    (faceaudit.whitebox.signals, signal "extended"): with x = x⁺ + x⁻ and s± = [y ≷ 0] p ⊘ D±,
    p_x = x⁺ ⊙ (W⁺ᵀs⁺ + W⁻ᵀs⁻) + x⁻ ⊙ (W⁻ᵀs⁺ + W⁺ᵀs⁻). Every term is ≥ 0 and mass is conserved
    wherever D± ≠ 0, on PReLU, max-feature-map (LightCNN) and ReLU-free networks alike, where `ebp`
    hands negative inputs negative "probabilities".
    A neuron's sign is its response's, bias included (Conv, Gemm, MatMul, pools); an elementwise
    rescaling or shift (input normalisation, BatchNormalization, a separate bias Add) is no neuron:
    its sign is the bias-free c·x's, so p passes it as in `ebp`. The target unit (the top layer, the
    last Gemm/MatMul/Conv before the score) is a pos-neuron whatever the sign of its logit or cosine:
    the paper leaves the seed's sign open, and the seed selects the target as the winner (with the
    literal sign, a class with a negative logit would be explained by what pushes it down, and eebp
    would differ from ebp on ReLU networks).
    On ReLU networks with non-negative activations every x⁻ term is zero and eebp equals `ebp`
    (tests/whitebox/test_extended.py, tests/methods/test_eebp.py).
    Seed and map as `ebp`: p = 1 at the class, or at the similarity head's probe–mate cosine (Wang et
    al. §2.1); p at the layer summed over channels, upsampled, smoothed with σ = smooth · image width,
    normalised to unit mass.
Reference:
    Wang et al. Extended excitation backprop with gradient weighting: a general visualization solution
    for understanding heterogeneous face recognition. Pattern Recognition Letters 192, 2025.
    Zhang et al. Top-down neural attention by excitation backprop. ECCV 2016.
Defaults:
    layer=input; smooth=0.02 (σ = 2 % of the image width, Castañón et al. 2018 §III), as `ebp`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.methods.cebp import instrumented_request, per_pixel, winner_tensors
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.ebp import EbpOptions
from faceaudit.methods.gradient import instrumented_forward
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox import backward
from faceaudit.whitebox.compiled import engine_extra, resolve_layer, run_backward
from faceaudit.whitebox.dataflow import SignalGraph
from faceaudit.whitebox.instrument import Activations, Instrumented
from faceaudit.whitebox.maps import smooth_and_normalise, upsample_bilinear

Responses = Mapping[str, np.ndarray]
Weigh = Callable[[Instrumented, Activations], tuple[Responses, dict]]


@dataclass(frozen=True)
class EebpOptions(EbpOptions):
    """Where the map is read ("input", or a tensor name) and σ of its smoothing as a fraction of the width."""


def target_as_winner(graph: SignalGraph, values: Responses) -> dict[str, np.ndarray]:
    """The top layer's responses as |y|, so eEBP reads the target unit as a pos-neuron (none without a top layer)."""
    return {name: np.abs(np.asarray(values[name], dtype=np.float64)) for name in winner_tensors(graph)}


def extended(graph: SignalGraph, values: Responses, seed: np.ndarray, layer: str, *,
             responses: Responses | None = None) -> np.ndarray:
    """The eEBP signal at `layer` from `seed` at graph's score by the numpy engine; `responses` override â
    (gweEBP's ã)."""
    winner = target_as_winner(graph, values)
    return backward(graph, values, seed, "extended", source=layer, responses={**(responses or {}), **winner})[layer]


def extended_map(method: str, model: PreparedModel, image: np.ndarray, target: ExplainTarget, options: EbpOptions,
                 progress: Progress | None, weigh: Weigh | None = None) -> SaliencyMap:
    """eEBP map (unit mass) of a class or a match to a mate; `weigh` gives responses ã and extra fields (gweEBP,
    on the numpy engine); without it the backward pass is compiled (whitebox.compiled, signal "extended")."""
    run = Run(method, model, target, options)
    if weigh is None:
        target, wb, inputs = instrumented_request(model, image, target)
        layer = resolve_layer(model, wb, options.layer, inputs)
        found = run_backward(model, wb, inputs, "extended", target.class_index, source=layer,
                             winners=winner_tensors(wb.graph))
        probability, stats, extra = found.signal, [found.stats], engine_extra(found)
    else:
        target, wb, acts = instrumented_forward(model, image, target)
        layer = wb.layer(options.layer, acts.values)
        responses, extra = weigh(wb, acts)
        seed = wb.seed(acts.values, "excitation", target.class_index)
        probability, stats = extended(wb.graph, acts.values, seed, layer, responses=responses), [acts.stats]
    values = per_pixel(probability, layer, wb, model)
    height, width = model.spec.require("height"), model.spec.require("width")
    result = smooth_and_normalise(upsample_bilinear(values, (height, width)), options.smooth * width)
    if progress is not None:
        progress(1, 1, method)
    return run.result(result, stats, signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(values.shape),
                             "mass_at_layer": float(probability.sum()), "folded_batch_norms": wb.folded_batch_norms,
                             **extra})


def eebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: EebpOptions = EebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Extended excitation backprop map (unit mass) for a class, or for the match to a mate."""
    return extended_map("eebp", model, image, target, options, progress)
