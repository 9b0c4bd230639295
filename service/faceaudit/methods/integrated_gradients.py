"""Integrated Gradients: the gradient integrated along the straight path from a baseline to the image.

Math (Sundararajan, Taly, Yan 2017, eq. 1 and its Riemann approximation eq. 3):
    IG_c(I) = (I_c − I'_c) · ∫_0^1 ∂s/∂I_c (I' + α (I − I')) dα
            ≈ (I_c − I'_c) · Σ_k w_k ∂s/∂I_c (I' + α_k (I − I'))
    with quadrature nodes α_k and weights w_k of the chosen rule on [0, 1]; I' the baseline image
    (a fill of faceaudit.engine.fills: black by default, blurred, the mean colour, any colour).
    The map is Σ_c IG_c (reduce=sum, signed: completeness, Σ_pixels map = s(I) − s(I'), holds for
    it) or max_c |IG_c| (max_abs). s as for `gradient`.
Completeness (§3, axiom): the metadata reports Σ map, s(I) − s(I') (both scored in the same runs)
    and their relative gap; raise `steps` when the gap matters (the paper: 20–300 steps, within 5 %).
Reference:
    Sundararajan, Taly, Yan. Axiomatic attribution for deep networks. ICML 2017. John et al.
    (survey) §2.1.
Defaults:
    steps=50 (captum's n_steps default, inside the paper's 20–300); rule=gauss_legendre (captum's
    default method; the paper's eq. 3 is riemann_right); fill=zero (black: the paper's baseline for
    image models, §3); reduce=sum; chunk=16 path images per run (engineering). captum:
    IntegratedGradients(f).attribute(x, baselines=b, target=k, n_steps=50) in model-input space
    gives the same attributions per channel, since preprocessing is affine per channel and the
    path in pixel space maps onto the path in model space (x − x' absorbs the scale).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_int, check_request
from faceaudit.methods.gradient import check_reduction, instrument_for, pixel_gradients
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import engine_extra

RULES = ("gauss_legendre", "riemann_right", "riemann_middle", "riemann_trapezoid")
MAX_STEPS = 10_000


@dataclass(frozen=True)
class IntegratedGradientsOptions(FillOptions):
    """Path steps, quadrature rule, channel reduction, baseline (FillOptions), path images per run."""

    steps: int = 50
    rule: str = "gauss_legendre"
    reduce: str = "sum"
    chunk: int = 16

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1, MAX_STEPS)
        if self.rule not in RULES:
            raise InvalidRequest("rule", f"{self.rule!r} is not one of {', '.join(RULES)}")
        check_reduction(self.reduce)
        check_int("chunk", self.chunk, 1, 256)
        super().__post_init__()


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α_k in [0, 1] and weights w_k (Σ w_k = 1) of `rule` with `steps` gradient evaluations."""
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if rule == "riemann_trapezoid":
        if steps == 1:
            raise InvalidRequest("steps", "the trapezoid rule needs at least 2 steps (both ends of the path)")
        nodes = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2.0
        return nodes, weights
    offset = 1.0 if rule == "riemann_right" else 0.5
    return (np.arange(steps) + offset) / steps, np.full(steps, 1.0 / steps)


def integrated_gradients(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: IntegratedGradientsOptions = IntegratedGradientsOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Integrated Gradients map from the baseline fill to the image, with its completeness gap."""
    run = Run("integrated_gradients", model, target, options)
    image, target = check_request(model, image, target)
    wb = instrument_for(model, target)
    baseline = options.baseline(image).astype(np.float64)
    delta = image.astype(np.float64) - baseline
    alphas, weights = quadrature(options.rule, options.steps)
    # The image and the baseline ride along in the first chunk: s(I) − s(I') for the completeness check.
    points = np.concatenate([[1.0, 0.0], alphas])

    def path() -> Iterator[np.ndarray]:
        for start in range(0, len(points), options.chunk):
            alpha = points[start : start + options.chunk, None, None, None]
            yield (baseline + alpha * delta).astype(np.float32)

    integral = np.zeros(image.shape, dtype=np.float64)
    scores, runs, done = [], [], 0
    for grads, chunk_scores, found in pixel_gradients(model, wb, path(), target):
        chunk_weights = np.concatenate([[0.0, 0.0], weights])[done : done + len(grads)]
        integral += np.tensordot(chunk_weights, grads, axes=1)
        scores.append(chunk_scores)
        runs.append(found)
        done += len(grads)
        if progress is not None:
            progress(done, len(points), "integrated_gradients")
    attributions = delta * integral
    values = attributions.sum(axis=-1) if options.reduce == "sum" else np.abs(attributions).max(axis=-1)
    score_image, score_baseline = np.concatenate(scores)[:2]
    difference, total = float(score_image - score_baseline), float(attributions.sum())
    gap = abs(total - difference) / max(abs(difference), 1e-12)
    return run.result(values, [r.stats for r in runs], signed=options.reduce == "sum", extra={
        "graph": "instrumented", "folded_batch_norms": wb.folded_batch_norms, **engine_extra(*runs),
        "completeness": {"sum_of_attributions": total, "score_difference": difference, "relative_gap": gap,
                         "score_image": float(score_image), "score_baseline": float(score_baseline)},
    })
