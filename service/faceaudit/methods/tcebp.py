"""Truncated contrastive excitation backprop (tcEBP): cEBP restricted to the support of the excitation map.

Math (Castañón & Byrne 2018 §V-B):
    P = EBP map of the target, N = EBP map of its contrast ("the negative excitation backprop signal
    for the class"), both per pixel at the map's layer (summed over channels), as in `cebp`.
    T = max( ⌊P⌋_ε / ‖⌊P⌋_ε‖₁ − ⌊N⌋_ε / ‖⌊N⌋_ε‖₁ , 0 ),   ⌊f⌋_ε = f where f > ε, else 0
    (a map whose truncation is empty contributes 0). T is upsampled bilinearly, smoothed with
    σ = smooth · image width and normalised to unit mass. Truncating before normalising removes the
    cEBP instability in regions of low excitation (outside the face), which are "unique" to the
    target but not important for it.
    ε rules (option `truncation`):
        percentile: ε = the `percentile`-th percentile of P, applied to both maps. The paper takes the
            70th percentile of the EBP map, averaged over a validation set (ε = 1.94e-5 at 224×224);
            with no validation set at hand, each request uses its own image's percentile.
        mass: each map keeps its largest values holding `mass` of its positive mass (ε per map), the
            rule of the public xfr code (keep the top 80 % of the mass).
    Contrast unit (`contrast`): as `cebp` — a class index, "others" (mean of the other classes,
    eq. 2), or "dual" (the target's top-layer weights negated, Zhang et al. §3.3); for embedding
    models the non-mate row of the similarity head, or the mate row's dual without a non-mate.
Reference:
    Castañón, Byrne. Visualizing and quantifying discriminative features for face recognition. FG 2018.
    Zhang et al. Top-down neural attention by excitation backprop. ECCV 2016.
Defaults:
    truncation=percentile (the paper's rule); percentile=70 (§V-B); mass=0.8 (xfr code);
    contrast=dual (the paper's negative EBP signal of the class); layer=input; smooth=0.02
    (σ = 2 % of the image width, §III).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.methods.cebp import (
    Contrast, Pair, check_contrast, check_map_options, compiled_pair, finish, per_pixel, units,
)
from faceaudit.methods.common import ExplainTarget, Progress, Run
from faceaudit.methods.gradient import instrumented_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import BackwardRun, engine_extra, resolve_layer, score_width

TRUNCATIONS = ("percentile", "mass")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TcebpOptions:
    """The ε rule and its parameter, the contrast unit, and the map's layer and smoothing."""

    truncation: str = "percentile"
    percentile: float = 70.0
    mass: float = 0.8
    contrast: Contrast = "dual"
    layer: str = "input"
    smooth: float = 0.02

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATIONS:
            raise InvalidRequest("truncation", f"{self.truncation!r} is not one of {', '.join(TRUNCATIONS)}")
        if not _number(self.percentile) or not 0 <= self.percentile < 100:
            raise InvalidRequest("percentile", f"{self.percentile!r} must be a number in [0, 100)")
        if not _number(self.mass) or not 0 < self.mass <= 1:
            raise InvalidRequest("mass", f"{self.mass!r} must be a fraction in (0, 1]")
        object.__setattr__(self, "contrast", check_contrast(self.contrast))
        check_map_options(self.layer, self.smooth)


def mass_threshold(values: np.ndarray, mass: float) -> float:
    """The ε below which `values` are dropped so that the kept largest values hold `mass` of the positive mass.

    Kept: values > ε. ε is the largest value below the smallest one needed (ties with it are kept),
    0 when every positive value is kept.
    """
    positive = np.sort(values[values > 0].ravel())[::-1]
    if positive.size == 0:
        return 0.0
    cumulative = np.cumsum(positive)
    count = int(np.searchsorted(cumulative, mass * cumulative[-1] * (1 - 1e-12))) + 1  # float sums: a hair's slack
    smaller = positive[count:][positive[count:] < positive[count - 1]]
    return float(smaller[0]) if smaller.size else 0.0


def truncate_and_normalise(values: np.ndarray, epsilon: float) -> np.ndarray:
    """⌊f⌋_ε / ‖⌊f⌋_ε‖₁, or zeros when nothing is above ε."""
    kept = np.where(values > epsilon, values, 0.0)
    total = float(kept.sum())
    return kept / total if total > 0 else kept


def tcebp(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: TcebpOptions = TcebpOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Truncated contrastive EBP map (unit mass) of a class against a contrast, or of a mate against a non-mate."""
    runs: list[BackwardRun] = []
    return truncated_contrastive_map("tcebp", compiled_pair(model, runs), model, image, target, options, progress,
                                     runs=runs)


def truncated_contrastive_map(
    method: str, pair: Pair, model: PreparedModel, image: np.ndarray, target: ExplainTarget, options: TcebpOptions,
    progress: Progress | None, *, runs: list[BackwardRun],
) -> SaliencyMap:
    """The tcEBP map with `pair` computing the target and contrast signals (EBP here, eEBP in etcebp); `runs`
    collects the backward passes of a compiled `pair` (their forward passes and engines are reported)."""
    run = Run(method, model, target, options)
    target, wb, inputs = instrumented_request(model, image, target)
    layer = resolve_layer(model, wb, options.layer, inputs)
    found = units(wb, score_width(model, wb, inputs), target, options.contrast)
    p_signal, n_signal = pair(wb, inputs, found, layer)
    p, n = per_pixel(p_signal, layer, wb, model), per_pixel(n_signal, layer, wb, model)
    if options.truncation == "percentile":
        eps_p = eps_n = float(np.percentile(p, options.percentile))
    else:
        eps_p, eps_n = mass_threshold(p, options.mass), mass_threshold(n, options.mass)
    kept = truncate_and_normalise(p, eps_p)
    if not kept.sum() > 0:
        raise ModelOutputError(f"{method}: no pixel of the target's excitation map is above ε; lower the percentile")
    contrast = np.maximum(kept - truncate_and_normalise(n, eps_n), 0.0)
    values = finish(contrast, model, options.smooth, method)
    if progress is not None:
        progress(1, 1, method)
    return run.result(values, [r.stats for r in runs], signed=False,
                      extra={"graph": "instrumented", "layer": layer, "layer_size": list(contrast.shape),
                             "contrast": found.description, "epsilon": eps_p, "epsilon_contrast": eps_n,
                             "folded_batch_norms": wb.folded_batch_norms, **engine_extra(*runs)})
