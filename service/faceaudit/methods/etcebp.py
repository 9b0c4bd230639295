"""Extended truncated contrastive excitation backprop (etcEBP): `tcebp` on eEBP maps.

Math (Castañón & Byrne 2018 §V-B with Wang et al. 2025 §2.2 eqs. 3–4):
    P, N = eEBP maps of the target and its contrast (faceaudit.methods.ecebp.extended_pair), per pixel
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
from faceaudit.errors import ModelOutputError
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.cebp import finish, per_pixel, units
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request
from faceaudit.methods.ecebp import extended_pair
from faceaudit.methods.gradient import instrument_for
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.methods.tcebp import TcebpOptions, mass_threshold, truncate_and_normalise


@dataclass(frozen=True)
class EtcebpOptions(TcebpOptions):
    """The ε rule and its parameter, the contrast unit, and the map's layer and smoothing."""


def etcebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: EtcebpOptions = EtcebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Extended truncated contrastive EBP map (unit mass): a class against a contrast, or a mate against a non-mate."""
    run = Run("etcebp", model, target, options)
    image, target = check_request(model, image, target)
    wb = instrument_for(model, target)
    acts = wb.forward(to_model_input(image[None], model.spec))
    layer = wb.layer(options.layer, acts.values)
    found = units(wb, acts, target, options.contrast)
    p_signal, n_signal = extended_pair(wb, acts, found, layer)
    p, n = per_pixel(p_signal, layer, wb, model), per_pixel(n_signal, layer, wb, model)
    if options.truncation == "percentile":
        eps_p = eps_n = float(np.percentile(p, options.percentile))
    else:
        eps_p, eps_n = mass_threshold(p, options.mass), mass_threshold(n, options.mass)
    kept = truncate_and_normalise(p, eps_p)
    if not kept.sum() > 0:
        raise ModelOutputError("etcebp: no pixel of the target's excitation map is above ε; lower the percentile")
    contrast = np.maximum(kept - truncate_and_normalise(n, eps_n), 0.0)
    values = finish(contrast, model, options.smooth, "etcebp")
    if progress is not None:
        progress(1, 1, "etcebp")
    return run.result(values, acts.stats, signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(contrast.shape),
                             "contrast": found.description, "epsilon": eps_p, "epsilon_contrast": eps_n,
                             "folded_batch_norms": wb.folded_batch_norms})
