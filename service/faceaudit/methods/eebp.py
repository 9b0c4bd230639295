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

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import ScoringStats
from faceaudit.methods.cebp import per_pixel, winner_tensors
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.ebp import EbpOptions
from faceaudit.methods.gradient import instrumented_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import engine_extra, resolve_layer, run_backward
from faceaudit.whitebox.instrument import Instrumented
from faceaudit.whitebox.maps import smooth_and_normalise, upsample_bilinear


@dataclass(frozen=True)
class EebpOptions(EbpOptions):
    """Where the map is read ("input", or a tensor name) and σ of its smoothing as a fraction of the width."""


class Weighting(Protocol):
    """gweEBP's gradient weighting: the gain seed ∂G/∂score (1, K) for the image, the stats of any forward
    pass it took to find it, and the map's metadata once the run's score is known."""

    def seed(self, wb: Instrumented, inputs: np.ndarray) -> tuple[np.ndarray, list[ScoringStats]]: ...

    def extra(self, score: np.ndarray) -> dict: ...


def extended_map(method: str, model: PreparedModel, image: np.ndarray, target: ExplainTarget, options: EbpOptions,
                 progress: Progress | None, weighting: Weighting | None = None) -> SaliencyMap:
    """eEBP map (unit mass) of a class or a match to a mate, on the compiled backward (whitebox.compiled,
    signal "extended"; the numpy engine where the path does not compile); `weighting` makes it gweEBP."""
    run = Run(method, model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    layer = resolve_layer(model, wb, options.layer, inputs)
    gain_seed, stats = weighting.seed(wb, inputs) if weighting is not None else (None, [])
    found = run_backward(model, wb, inputs, "extended", target.class_index, source=layer,
                         winners=winner_tensors(wb.graph), gain_seed=gain_seed)
    probability = found.signal
    values = per_pixel(probability, layer, wb, model)
    height, width = model.spec.require("height"), model.spec.require("width")
    result = smooth_and_normalise(upsample_bilinear(values, (height, width)), options.smooth * width)
    if progress is not None:
        progress(1, 1, method)
    extra = weighting.extra(found.score) if weighting is not None else {}
    return run.result(result, [*stats, found.stats], signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(values.shape),
                             "mass_at_layer": float(probability.sum()), "folded_batch_norms": wb.folded_batch_norms,
                             **extra, **engine_extra(found)})


def eebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: EebpOptions = EebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Extended excitation backprop map (unit mass) for a class, or for the match to a mate."""
    return extended_map("eebp", model, image, target, options, progress)
