"""KernelSHAP over superpixels: Shapley values of the superpixels, by weighted linear regression.

Math (Lundberg & Lee 2017, Theorem 2):
    f(z) = s(image with superpixels z kept, the rest filled), z ∈ {0, 1}^M.
    φ minimises Σ_z π(z) (f(z) − φ_0 − z·φ)²  with the Shapley kernel
        π(z) = (M − 1) / (C(M, |z|) · |z| · (M − |z|)),
    and the constraints φ_0 = f(0), Σ_m φ_m = f(1) − f(0) (π is infinite at |z| ∈ {0, M}).
    Coalitions are drawn from π itself (size k with probability ∝ (M − 1)/(k(M − k)), then a
    uniform subset of that size; each draw with its complement, as the shap package pairs them),
    so that the regression weighs the draws equally. With samples ≥ 2^M − 2 every coalition is
    enumerated and weighed by π exactly, which gives the exact Shapley values of f (for an additive
    f, at any number of samples whose design has full rank). The constraint is eliminated by
    substituting φ_M = f(1) − f(0) − Σ_{m<M} φ_m (Lundberg & Lee's implementation does the same).
    The map paints each pixel with its superpixel's φ_m (signed). s as for occlusion.
Reference:
    Lundberg, Lee. A unified approach to interpreting model predictions. NeurIPS 2017. John et
    al. (survey) §2.2.
Defaults:
    samples=1000 coalitions (the cost knob; shap's KernelExplainer uses 2M + 2048); segmentation=slic
    with segments=50 and compactness=10 (scikit-image's SLIC defaults: n_segments=100 is theirs, 50
    is cheaper for 112-px faces); fill=mean (the image's mean colour, a stand-in for LIME's
    per-superpixel mean); seed=0; chunk=64 images per streamed chunk (engineering).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.methods.superpixels import CoalitionOptions, paint, score_coalitions, segment


@dataclass(frozen=True)
class KernelShapOptions(CoalitionOptions):
    """Coalitions to score, superpixels (segmentation, segments, compactness), fill, seed, images per chunk."""


def shapley_coalitions(m: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (n, m) bool and their regression weights (n,): all of them weighed by π when
    samples ≥ 2^m − 2, else draws from π (in complementary pairs) weighed equally."""
    if m < 2:
        raise InvalidRequest("segments", "KernelSHAP needs at least two superpixels")
    if m <= 20 and samples >= 2**m - 2:
        rows, weights = [], []
        for k in range(1, m):
            for keep in combinations(range(m), k):
                z = np.zeros(m, dtype=bool)
                z[list(keep)] = True
                rows.append(z)
                weights.append((m - 1) / (comb(m, k) * k * (m - k)))
        return np.array(rows), np.array(weights)
    sizes = np.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes))
    drawn = rng.choice(sizes, size=(samples + 1) // 2, p=p / p.sum())
    half = np.zeros((len(drawn), m), dtype=bool)
    for row, k in zip(half, drawn):
        row[rng.choice(m, size=k, replace=False)] = True
    coalitions = np.concatenate([half, ~half])[:samples]
    return coalitions, np.ones(len(coalitions))


def constrained_shapley_fit(z: np.ndarray, f: np.ndarray, weights: np.ndarray, empty: float, full: float) -> np.ndarray:
    """φ (m,) of the weighted least squares with φ_0 = empty and Σφ = full − empty (the last φ eliminated)."""
    x = z.astype(np.float64)
    y = f - empty - x[:, -1] * (full - empty)
    design = x[:, :-1] - x[:, -1:]
    root = np.sqrt(weights)[:, None]
    head, *_ = np.linalg.lstsq(design * root, y * root[:, 0], rcond=None)
    return np.append(head, full - empty - head.sum())


def kernel_shap(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: KernelShapOptions = KernelShapOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """KernelSHAP map: each superpixel painted with its Shapley value of the score."""
    run = Run("kernel_shap", model, target, options)
    image, target = check_request(model, image, target)
    labels = segment(image, options.segmentation, options.segments, options.compactness)
    m = int(labels.max()) + 1
    coalitions, weights = shapley_coalitions(m, options.samples, np.random.default_rng(options.seed))
    everything = np.concatenate([np.ones((1, m), bool), np.zeros((1, m), bool), coalitions])
    f, scorer = score_coalitions(model, image, target, labels, everything, options, progress, "kernel_shap")
    phi = constrained_shapley_fit(coalitions, f[2:], weights, f[1], f[0])
    return run.result(paint(labels, phi), scorer.stats, signed=True, extra={
        "superpixels": m, "coalitions": len(coalitions), "exact": bool(len(coalitions) == 2**m - 2),
        "score_full": float(f[0]), "score_empty": float(f[1]),
    })
