"""LIME over superpixels: the coefficients of a weighted linear surrogate fitted to random coalitions.

Math (Ribeiro, Singh, Guestrin 2016, eqs. 1–2, and lime_image.LimeImageExplainer):
    f(z) = s(image with superpixels z kept, the rest filled), z ∈ {0, 1}^M; z_1 = 1 (the image
    itself) plus `samples` − 1 coalitions with every z_m ~ Bernoulli(1/2).
    π(z) = sqrt(exp(−d(z, 1)² / σ²)), d the cosine distance between z and the all-ones vector,
    σ = kernel_width (lime's LimeImageExplainer: kernel_width=0.25, its kernel takes the square root).
    (β_0, β) = argmin Σ_z π(z) (f(z) − β_0 − z·β)² + ridge · ‖β‖²  (sklearn's Ridge(alpha=1) as lime
    fits it: intercept unpenalised, i.e. ridge on the π-weighted centred data).
    The map paints each pixel with its superpixel's β_m (signed).
Reference:
    Ribeiro, Singh, Guestrin. "Why should I trust you?": explaining the predictions of any
    classifier. KDD 2016. John et al. (survey) §2.2.
Defaults:
    samples=1000 (lime's num_samples default); kernel_width=0.25 and ridge=1.0 (lime's image
    explainer and its Ridge(alpha=1)); segmentation=slic, segments=50, compactness=10 (lime uses
    quickshift: segmentation=quickshift reproduces it); fill=mean (lime's hide_color=None fills each
    superpixel with its own mean; the image's mean colour is the nearest fill here); seed=0;
    chunk=64 images per streamed chunk (engineering).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.methods.superpixels import CoalitionOptions, paint, score_coalitions, segment


@dataclass(frozen=True)
class LimeOptions(CoalitionOptions):
    """Coalitions, superpixels, fill, seed, images per chunk (CoalitionOptions); kernel width, ridge penalty."""

    kernel_width: float = 0.25
    ridge: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.kernel_width, (int, float)) and 0 < self.kernel_width <= 100):
            raise InvalidRequest("kernel_width", f"{self.kernel_width!r} must be in (0, 100]")
        if not (isinstance(self.ridge, (int, float)) and 0 <= self.ridge <= 1e6):
            raise InvalidRequest("ridge", f"{self.ridge!r} must be in [0, 1e6]")
        super().__post_init__()


def lime_weights(z: np.ndarray, kernel_width: float) -> np.ndarray:
    """π(z) = sqrt(exp(−d²/σ²)), d the cosine distance of each coalition to the all-ones coalition."""
    x = z.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    cosine = np.divide(x.sum(axis=1), norms * np.sqrt(z.shape[1]), out=np.zeros(len(z)), where=norms > 0)
    return np.sqrt(np.exp(-((1.0 - cosine) ** 2) / kernel_width**2))


def weighted_ridge(z: np.ndarray, f: np.ndarray, weights: np.ndarray, ridge: float) -> np.ndarray:
    """β of the weighted ridge regression with an unpenalised intercept (centring by the weighted means)."""
    x = z.astype(np.float64)
    w = weights / weights.sum()
    xc, yc = x - w @ x, f - w @ f
    gram = (xc * weights[:, None]).T @ xc + ridge * np.eye(x.shape[1])
    return np.linalg.lstsq(gram, (xc * weights[:, None]).T @ yc, rcond=None)[0]


def lime(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: LimeOptions = LimeOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """LIME map: each superpixel painted with its coefficient in the local linear surrogate."""
    run = Run("lime", model, target, options)
    image, target = check_request(model, image, target)
    labels = segment(image, options.segmentation, options.segments, options.compactness)
    m = int(labels.max()) + 1
    rng = np.random.default_rng(options.seed)
    coalitions = rng.integers(0, 2, size=(options.samples, m)).astype(bool)
    coalitions[0] = True  # lime's first sample is the image itself
    f, scorer = score_coalitions(model, image, target, labels, coalitions, options, progress, "lime")
    beta = weighted_ridge(coalitions, f, lime_weights(coalitions, options.kernel_width), options.ridge)
    return run.result(paint(labels, beta), scorer.stats, signed=True, extra={"superpixels": m})
