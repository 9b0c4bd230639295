"""Gradient-weighted extended excitation backprop (gweEBP): eEBP over responses weighted by the triplet gain's gradient.

Math (Wang et al. 2025 §2.3, eqs. 5–6):
    Gain of the triplet (probe a, mate p, non-mate n), on the unit-norm embeddings the similarity head
    compares (Wang §2.1: its rows are the mate and non-mate; its outputs the cosines c_p, c_n):
        gain=similarity: G = ⟨a, p⟩ − ⟨a, n⟩ = c_p − c_n (the authors' public code);
        gain=hinge:      G = max(0, ‖a − n‖ − ‖a − p‖)  (eq. 5), ‖a − r‖ = √(2 − 2c_r), so where
                         G > 0, ∂G/∂c_p = 1/‖a − p‖ and ∂G/∂c_n = −1/‖a − n‖.
    g_j = ∂G/∂a_j for every activation a_j between the input and the score: one exact vector–Jacobian
    product (the backward engine's gradient signal, seeded with ∂G/∂(c_p, c_n) at the head).
    Gradient-weighted responses (eq. 6), ã_j = â_j [g_j]⁺ for â_j ≥ 0 and â_j [−g_j]⁺ for â_j < 0:
    a neuron is kept, scaled by |g_j|, where its gradient has its sign, and suppressed (ã = 0) where
    the signs differ. Eq. 6 as printed has no positive part on the negative branch, which would turn
    a negative neuron with a positive gradient into a positive one; the text says such neurons "are
    suppressed", which is what we implement. ã has â's sign, so pos-/neg-neuron sets are unchanged.
    ã replaces â in the eEBP pass (eqs. 3–4, `eebp`), seeded with p = 1 at the probe–mate cosine;
    the model input is not a neuron and keeps its values, and the top layer's units are pos-neurons
    (see `eebp`). Map as `eebp`: p at the layer summed over channels, upsampled, smoothed with
    σ = smooth · image width, normalised to unit mass.
    Embedding models only, with a mate and a non-mate: a classifier has no triplet gain
    (InvalidRequest "target"), and without a non-mate there is no triplet (InvalidRequest "non_mate").
Reference:
    Wang et al. Extended excitation backprop with gradient weighting: a general visualization solution
    for understanding heterogeneous face recognition. Pattern Recognition Letters 192, 2025.
Defaults:
    gain=similarity: the hinge's gradient is zero whenever the probe is closer to the non-mate than to
    the mate (G = 0), exactly the mismatches one wants explained; the similarity difference has a
    gradient everywhere. With gain=hinge and G = 0 the request is refused (InvalidRequest "gain",
    saying to use gain=similarity) rather than silently falling back: the hinge's map does not exist.
    layer=input; smooth=0.02 (σ = 2 % of the image width, Castañón et al. 2018 §III), as `ebp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import ScoringStats
from faceaudit.errors import InvalidRequest
from faceaudit.methods.cebp import check_map_options
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.eebp import extended_map
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.instrument import Instrumented

GAINS = ("similarity", "hinge")


@dataclass(frozen=True)
class GweebpOptions:
    """The triplet gain whose gradient weighs the responses, and the map's layer and smoothing."""

    gain: str = "similarity"
    layer: str = "input"
    smooth: float = 0.02

    def __post_init__(self) -> None:
        if self.gain not in GAINS:
            raise InvalidRequest("gain", f"{self.gain!r} is not one of {', '.join(GAINS)}")
        check_map_options(self.layer, self.smooth)


def gain_value(cosines: np.ndarray, gain: str) -> np.ndarray:
    """G (B,) from the head's cosines (B, 2): c_p − c_n, or max(0, ‖a − n‖ − ‖a − p‖) with ‖a − r‖ = √(2 − 2c_r)."""
    c_p, c_n = np.asarray(cosines, dtype=np.float64)[:, 0], np.asarray(cosines, dtype=np.float64)[:, 1]
    if gain == "similarity":
        return c_p - c_n
    return np.maximum(_distance(c_n) - _distance(c_p), 0.0)


def _distance(cosine: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(2.0 - 2.0 * cosine, 0.0))


def gain_seed(cosines: np.ndarray, gain: str) -> tuple[np.ndarray, np.ndarray]:
    """∂G/∂(c_p, c_n) (B, 2) and G (B,) from the head's cosines (B, 2); the hinge's zero gradient is refused."""
    value = gain_value(cosines, gain)
    if gain == "similarity":
        return np.tile([1.0, -1.0], (len(value), 1)), value
    cosines = np.asarray(cosines, dtype=np.float64)
    d_p, d_n = _distance(cosines[:, 0]), _distance(cosines[:, 1])
    if not (value > 0).all() or not (d_p > 0).all():
        raise InvalidRequest("gain", "the hinge gain max(0, ‖a−n‖ − ‖a−p‖) is 0 for this probe (it is at least as "
                                     f"close to the non-mate as to the mate: ‖a−p‖ = {d_p.max():.4f}, ‖a−n‖ = "
                                     f"{d_n.min():.4f}), so its gradient is zero and weighs every neuron to 0; "
                                     "use gain=similarity")
    return np.stack([1.0 / d_p, -1.0 / d_n], axis=1), value


@dataclass(frozen=True)
class TripletGain:
    """The triplet gain as eEBP's weighting (methods.eebp.Weighting): its seed ∂G/∂(c_p, c_n) at the head."""

    gain: str

    def seed(self, wb: Instrumented, inputs: np.ndarray) -> tuple[np.ndarray, list[ScoringStats]]:
        if self.gain == "similarity":  # ∂(c_p − c_n)/∂(c_p, c_n) = (1, −1): no forward pass needed
            return np.array([[1.0, -1.0]]), []
        acts = wb.forward(inputs)  # the hinge's seed depends on the cosines (and is refused where G = 0)
        return gain_seed(acts.values[wb.graph.score].reshape(len(inputs), -1), self.gain)[0], [acts.stats]

    def extra(self, score: np.ndarray) -> dict:
        return {"gain": self.gain, "gain_value": float(gain_value(score.reshape(len(score), -1), self.gain)[0])}


def gweebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: GweebpOptions = GweebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Gradient-weighted eEBP map (unit mass) of a probe's match to its mate against a non-mate."""
    if model.spec.require("kind") != "embedding" or target.class_index is not None:
        raise InvalidRequest("target", "gweebp explains an embedding model's probe against a mate and a non-mate "
                                       "(the triplet gain of Wang et al. 2025 §2.3); classifiers have none")
    if target.mate is not None and target.non_mate is None:
        raise InvalidRequest("non_mate", "gweebp needs a non-mate: its triplet gain compares the probe's "
                                         "similarity to the mate with its similarity to the non-mate")
    return extended_map("gweebp", model, image, target, options, progress, weighting=TripletGain(options.gain))
