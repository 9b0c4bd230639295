"""Extended truncated contrastive excitation backprop (etcEBP): `tcebp` on eEBP maps.

Math (Castañón & Byrne 2018 §V-B with Wang et al. 2025 §2.2 eqs. 3–4):
    P, N = eEBP maps of the target and its contrast (methods.cebp.compiled_pair with the extended signal), per pixel
    at the map's layer; T = max(⌊P⌋_ε / ‖⌊P⌋_ε‖₁ − ⌊N⌋_ε / ‖⌊N⌋_ε‖₁, 0), ⌊f⌋_ε = f where f > ε, else 0.
    ε rules and contrast units are `tcebp`'s: percentile (ε = the percentile-th percentile of P, both
    maps) or mass (each map keeps its largest values holding `mass` of its mass, the xfr code's rule);
    contrast a class index, "others" or "dual", the non-mate (or the mate's dual) for embeddings.
    T upsampled bilinearly, smoothed with σ = smooth · image width, normalised to unit mass. On ReLU
    networks with non-negative activations etcebp equals `tcebp`. Wang et al. §4.2.4 use a 20 %
    truncation rate for tcEBP; percentile=80 reproduces that.
Reference:
    Wang et al. Extended excitation backprop with gradient weighting. Pattern Recognition Letters 192, 2025.
    Castañón, Byrne. Visualizing and quantifying discriminative features for face recognition. FG 2018.
Defaults:
    truncation=percentile; percentile=70; mass=0.8; contrast=dual; layer=input; smooth=0.02, as `tcebp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.cebp import compiled_pair
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import BackwardRun
from faceaudit.methods.tcebp import TcebpOptions, truncated_contrastive_map


@dataclass(frozen=True)
class EtcebpOptions(TcebpOptions):
    """The ε rule and its parameter, the contrast unit, and the map's layer and smoothing."""


def etcebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: EtcebpOptions = EtcebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Extended truncated contrastive EBP map (unit mass): a class against a contrast, or a mate against a non-mate."""
    runs: list[BackwardRun] = []
    return truncated_contrastive_map("etcebp", compiled_pair(model, runs, "extended"), model, image, target, options,
                                     progress, runs=runs)
