"""Layer-wise relevance propagation (LRP): the score redistributed layer by layer down to the pixels.

Math (Bach et al. 2015; the rules as written by Montavon et al. 2019, §10.2), with the backward
engine's per-operator rules (faceaudit.whitebox.signals, kinds lrp_epsilon and lrp_alpha_beta):
    start:  R = s at the explained output (the class's value as the graph outputs it; for embedding
            models the probe–mate cosine of the similarity head, minus the probe–non-mate cosine's
            relevance when a non-mate is given)
    ε:      R_x = x ⊙ Wᵀ (R ⊘ (z + ε·sign z)),  z = W x + b  (biases absorb their share)
    α1β0:   R_x = x⁺ ⊙ W⁺ᵀ s + x⁻ ⊙ W⁻ᵀ s,  s = R ⊘ Σ (x w)⁺   (bias left out, so relevance is conserved)
    Activations pass relevance through, max pooling gives it to the window's winner, residual sums
    split it by contribution (ε) or positive contribution (α1β0), gates give it all to the gated path.
    Map: R at the model input summed over its channels (relevance is additive; the preprocessing
    outside the graph is one affine map per pixel, which LRP does not redistribute).
How α1β0 differs from EBP (`ebp`): on non-negative inputs their rule at a linear map is the same,
    p_x = x ⊙ W⁺ᵀ(p ⊘ W⁺x), so α1β0's map is s × EBP's unsmoothed map there. They differ in the start
    (LRP R = s, EBP p = 1), at negative inputs (α1β0 keeps (x w)⁺ of x < 0 through w < 0; EBP has no
    such term), and EBP's map is smoothed and normalised.
Conservation: the metadata reports Σ R at the input against R at the output. With α1β0 and with ε
    on bias-free layers it is conserved wherever no denominator is zero.
Reference:
    Bach, Binder, Montavon, Klauschen, Müller, Samek. On pixel-wise explanations for non-linear
    classifier decisions by layer-wise relevance propagation. PLoS ONE 2015. Montavon, Binder,
    Lapuschkin, Samek, Müller. Layer-wise relevance propagation: an overview. 2019. Survey §2.1.
Defaults:
    rule=epsilon; epsilon=1e-06 (zennit's Epsilon rule default: a stabiliser, not a smoother).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.gradient import instrumented_forward
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox import backward
from faceaudit.whitebox.instrument import Instrumented
from faceaudit.whitebox.maps import channels_last

LRP_RULES = {"epsilon": "lrp_epsilon", "alpha_beta": "lrp_alpha_beta"}


@dataclass(frozen=True)
class LrpOptions:
    """The rule at linear layers ("epsilon" or "alpha_beta", i.e. α1β0) and ε of the epsilon rule."""

    rule: str = "epsilon"
    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        if self.rule not in LRP_RULES:
            raise InvalidRequest("rule", f"{self.rule!r} is not one of {', '.join(LRP_RULES)}")
        number = isinstance(self.epsilon, (int, float)) and not isinstance(self.epsilon, bool)
        if not number or not (math.isfinite(self.epsilon) and 0 <= self.epsilon <= 1e6):
            raise InvalidRequest("epsilon", f"{self.epsilon!r} must be a number in [0, 1e6]")


def relevance_seed(wb: Instrumented, values: dict[str, np.ndarray], target: ExplainTarget) -> np.ndarray:
    """R at the score (1, K): the class's value, or the cosines (mate +, non-mate −) of the similarity head."""
    scores = np.asarray(values[wb.graph.score], dtype=np.float64).reshape(1, -1)
    seed = np.zeros_like(scores)
    if wb.similarity:
        seed[0, 0] = scores[0, 0]
        if scores.shape[1] > 1:
            seed[0, 1] = -scores[0, 1]
    else:
        seed[0, target.class_index] = scores[0, target.class_index]
    return seed


def lrp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: LrpOptions = LrpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """LRP relevance map (signed) for a class, or for the match to a mate (minus the non-mate)."""
    run = Run("lrp", model, target, options)
    target, wb, acts = instrumented_forward(model, image, target)
    seed = relevance_seed(wb, acts.values, target)
    relevance = backward(wb.graph, acts.values, seed, LRP_RULES[options.rule],
                         epsilon=options.epsilon)[wb.graph.input_name]
    values = channels_last(relevance, model.spec.require("layout"))[0].sum(axis=-1)
    if progress is not None:
        progress(1, 1, "lrp")
    return run.result(values, acts.stats, signed=True, extra={
        "graph": "instrumented", "folded_batch_norms": wb.folded_batch_norms,
        "relevance_out": float(seed.sum()), "relevance_in": float(relevance.sum()),
    })
