"""Extended contrastive excitation backprop (ecEBP): `cebp` with eEBP's two streams in place of EBP.

Math (Wang et al. 2025 §2.2 eqs. 3–4, applied to Zhang et al. 2016 §3.3 and Castañón et al. 2018 §V-A):
    P = eEBP map of the target unit, N = eEBP map of the contrast unit (faceaudit.methods.eebp's rule,
    with the same forward activations); the forms and contrast units are `cebp`'s:
    form=difference: C = max(P − N, 0) at the map's layer, summed over channels.
    form=zhang: P and N propagated to the contrast layer, c = max(P − N, 0) there, c continues down
        by eEBP to the map's layer.
    Contrast (classifiers): a class index, "others" (1/(K−1) Σ_{j≠k} P_j, Castañón eq. 2) or "dual"
        (the top layer's weights negated, Zhang's "non-zebra" unit); embedding models: the non-mate
        row of the similarity head (Wang §2.1), else the mate row's dual.
    Both units are read as pos-neurons at the top layer (see `eebp`), the dual included.
    C upsampled bilinearly, smoothed with σ = smooth · image width, normalised to unit mass. On ReLU
    networks with non-negative activations ecebp equals `cebp`.
Reference:
    Wang et al. Extended excitation backprop with gradient weighting. Pattern Recognition Letters 192, 2025.
    Zhang et al. Top-down neural attention by excitation backprop. ECCV 2016.
    Castañón, Byrne. Visualizing and quantifying discriminative features for face recognition. FG 2018.
Defaults:
    form=difference; contrast=others; contrast_layer=top; layer=input; smooth=0.02, as `cebp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.methods.cebp import CebpOptions, compiled_difference, compiled_down, contrastive_map
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import BackwardRun


@dataclass(frozen=True)
class EcebpOptions(CebpOptions):
    """The form, the contrast unit, the zhang form's contrast layer, and the map's layer and smoothing."""


def ecebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: EcebpOptions = EcebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Extended contrastive EBP map (unit mass) of a class against a contrast, or of a mate against a non-mate."""
    runs: list[BackwardRun] = []
    return contrastive_map("ecebp", compiled_difference(model, runs, "extended"), compiled_down(model, runs, "extended"),
                           model, image, target, options, progress, runs=runs)
