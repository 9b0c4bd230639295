"""CorrRISE: per-pixel correlation of RISE masks with the probe-to-mate similarity.

Math:
    s_i = cos(e(I ⊙ M_i + (1 − M_i) ⊙ B), e(mate))   for the RISE masks M_i (faceaudit.methods.rise)
    C(λ) = Pearson correlation over i of (M_i(λ), s_i)
         = (N Σ s_i M_i(λ) − Σ s_i · Σ M_i(λ))
           / sqrt((N Σ s_i² − (Σ s_i)²) · (N Σ M_i(λ)² − (Σ M_i(λ))²))
    from running float64 sums, in one pass over the masks. C > 0 where keeping the pixel raises the
    similarity (similar regions), C < 0 where it lowers it (dissimilar regions). A pixel whose mask
    values do not vary (or a run whose scores do not vary) gets 0. With a non-mate the map is
    contrastive, C_mate − C_non-mate, as Wang et al. (2025, §4.2.5) use CorrRISE.
Reference:
    Y. Lu, Z. Xu, T. Ebrahimi, "Towards visual saliency explanations of face verification",
    WACV 2024 (doi:10.1109/WACV57701.2024.00466); reference [22] of Wang et al. 2025.
Defaults:
    RISE's (masks=4000, cells=7, keep=0.5, fill=zero; see faceaudit.methods.rise): the mask settings of Lu et
    al. are not in the texts we checked, and Wang et al. implemented CorrRISE "based on the official
    implementation of RISE". Embedding models only: a classifier raises InvalidRequest("target").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_inputs, scoring_target
from faceaudit.methods.rise import RiseOptions, check_cells, scored_masks
from faceaudit.methods.saliency_map import SaliencyMap

# N·Σx² − (Σx)² below this fraction of N·Σx² is float rounding of a constant: no variation.
_NO_SPREAD = 1e-9


@dataclass(frozen=True)
class CorrRiseOptions(RiseOptions):
    """CorrRISE options: RISE's masks with RISE's defaults."""


class CorrelationSums:
    """Running sums N, Σs, Σs², ΣM, ΣM², Σs·M in float64 for per-pixel Pearson correlations.

    Scores have R columns (mate, non-mate); the correlation is computed for each column.
    """

    def __init__(self, height: int, width: int, columns: int) -> None:
        self.count = 0
        self.s = np.zeros(columns)
        self.s2 = np.zeros(columns)
        self.m = np.zeros((height, width))
        self.m2 = np.zeros((height, width))
        self.sm = np.zeros((columns, height, width))

    def add(self, masks: np.ndarray, scores: np.ndarray) -> None:
        """Add a chunk: masks (b, H, W), scores (b, R)."""
        scores = scores.astype(np.float64)
        masks64 = masks.astype(np.float64)
        self.count += len(masks)
        self.s += scores.sum(axis=0)
        self.s2 += np.einsum("br,br->r", scores, scores)
        self.m += masks64.sum(axis=0)
        self.m2 += np.einsum("bhw,bhw->hw", masks64, masks64)
        self.sm += np.tensordot(scores.T, masks64, axes=1)

    def correlation(self) -> np.ndarray:
        """(R, H, W) Pearson correlation of each pixel's mask values with each score column."""
        n = self.count
        spread_s = _spread(n, self.s, self.s2)[:, None, None]
        spread_m = _spread(n, self.m, self.m2)[None]
        covariance = n * self.sm - self.s[:, None, None] * self.m[None]
        denominator = np.sqrt(spread_s * spread_m)
        return np.divide(covariance, denominator, out=np.zeros_like(covariance), where=denominator > 0)


def _spread(n: int, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """N·Σx² − (Σx)² (N² times the variance), with rounding noise of a constant set to 0."""
    spread = n * squares - total**2
    return np.where(spread > _NO_SPREAD * n * squares, spread, 0.0)


def corr_rise(model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
              options: CorrRiseOptions = CorrRiseOptions(), progress: Progress | None = None) -> SaliencyMap:
    """CorrRISE map of the probe `image` against the mate (minus the map against the non-mate)."""
    if model.spec.require("kind") == "classifier":
        raise InvalidRequest("target", "CorrRISE explains embedding models (a probe against a mate); "
                                       "use rise for a classifier")
    run = Run("corr_rise", model, target, options)
    image = check_inputs(model, image, target)
    check_cells(options, *image.shape[:2])
    scorer = Scorer(model, scoring_target(model, target))
    sums = CorrelationSums(*image.shape[:2], columns=1 if target.non_mate is None else 2)
    for masks, scores in scored_masks(scorer, image, options, progress, "corr_rise"):
        sums.add(masks, scores.reshape(len(scores), -1))
    correlation = sums.correlation()
    values = correlation[0] if len(correlation) == 1 else correlation[0] - correlation[1]
    return run.result(values, scorer.stats, signed=True, extra={"masks": options.masks})
