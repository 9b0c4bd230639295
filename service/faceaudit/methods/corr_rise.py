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
Estimator, mask design, antithetic masks, early stopping:
    The numerator is N² times the sample covariance of s and M(λ): CorrRISE is centred by
    construction, like RISE's `centred` estimator, and divides it by the sample standard deviations
    of s and M(λ) instead of by p. So only estimator=centred is accepted (`paper` has no meaning
    here and is refused rather than ignored). The mask design (orthogonal blocks by default, or
    independent masks), antithetic masks and early stopping work as for RISE (see
    faceaudit.methods.rise): the two half-maps are correlation maps of alternate samples (masks,
    pairs or blocks), the Spearman–Brown estimate 2r/(1+r) of their correlation r is checked every
    `check_every` masks rounded up to whole samples, and the metadata reports masks, split_half_r,
    spearman_brown, stop_reason, sample_unit and design. Progress phases are "corr_rise" and, after an
    early stop, "corr_rise: converged". A ratio of sums, C is consistent, not unbiased, under either
    design (a bias of order 1/N); orthogonal blocks keep every mask a RISE mask, so its limit is
    the same.
    Variance: as the centred RISE estimator's, and orthogonal blocks remove the same cross-cell
    noise (the covariance in the numerator is the centred RISE sum). bench/rise_estimators.py
    measures each against a 16,000-mask reference of its own expectation (64×64, 7×7 cells, mean
    of 3 seeds): on the zoo's IResNet-style embedder independent masks reach fidelity 0.78 at 250
    masks, 0.92 at 1000 and 0.986 at 4000, orthogonal blocks 0.96, 0.99 and 0.996; on the demo's
    trained embedder 0.935, 0.983, 0.997 against 0.991, 0.998, 1.000. Antithetic masks lower it
    (zoo: 0.68, 0.84, 0.97) for the reason given for the centred estimator: for a score linear in
    the mask a complementary pair carries one mask's information.
Reference:
    Y. Lu, Z. Xu, T. Ebrahimi, "Towards visual saliency explanations of face verification",
    WACV 2024 (doi:10.1109/WACV57701.2024.00466); reference [22] of Wang et al. 2025.
Defaults:
    RISE's (masks=4000, cells=7, keep=0.5, fill=zero, estimator=centred, design=None (orthogonal
    blocks unless keep ≠ 0.5 or antithetic), check_every=None (64 with blocks, 250 without), a fixed
    N; see faceaudit.methods.rise): the mask settings of Lu et al. are not in the
    texts we checked, and Wang et al. implemented CorrRISE "based on the official implementation of
    RISE". Embedding models only: a classifier raises InvalidRequest("target").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request, scoring_target
from faceaudit.methods.rise import RiseOptions, accumulate, check_cells, half_indicator, halves
from faceaudit.methods.saliency_map import SaliencyMap

# N·Σx² − (Σx)² below this fraction of N·Σx² is float rounding of a constant: no variation.
_NO_SPREAD = 1e-9


@dataclass(frozen=True)
class CorrRiseOptions(RiseOptions):
    """CorrRISE options: RISE's masks with RISE's defaults; the estimator is always centred."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.masks < 2:
            raise InvalidRequest("masks", f"{self.masks}: a correlation needs at least 2 masks")
        if self.keep >= 1:
            raise InvalidRequest("keep", f"{self.keep}: with keep 1 every mask is all ones, nothing to correlate")
        if self.estimator != "centred":
            raise InvalidRequest("estimator", f"{self.estimator!r}: CorrRISE is a Pearson correlation, centred by "
                                              "construction; only 'centred' applies")


class CorrelationSums:
    """Running sums N, Σs, Σs², ΣM, ΣM², Σs·M in float64 for per-pixel Pearson correlations.

    Scores have R columns (mate, non-mate); the correlation is computed for each column. The sums
    are kept for two halves of the masks (`add` takes each mask's half; without it every mask goes
    to half 0), so that the correlation of half 0, half 1 or (`which=None`) all masks is available.
    """

    def __init__(self, height: int, width: int, columns: int) -> None:
        # Scores and masks are accumulated minus the first chunk's means: Pearson's r is unchanged
        # by shifts, and N·Σx² − (Σx)² then loses no digits when the scores vary by far less than
        # their mean (a cosine near 1 varying in the fifth decimal).
        self.shift_s: np.ndarray | None = None
        self.shift_m = 0.0
        self.counts = np.zeros(2, np.int64)
        self.s = np.zeros((2, columns))
        self.s2 = np.zeros((2, columns))
        self.m = np.zeros((2, height, width))
        self.m2 = np.zeros((2, height, width))
        self.sm = np.zeros((2, columns, height, width))

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def add(self, masks: np.ndarray, scores: np.ndarray, half: np.ndarray | None = None) -> None:
        """Add a chunk: masks (b, H, W), scores (b, R), half (b,) of 0 and 1."""
        scores = scores.reshape(len(masks), -1).astype(np.float64)
        if self.shift_s is None:
            self.shift_s, self.shift_m = scores.mean(axis=0), float(masks.mean())
        scores = scores - self.shift_s
        centred = masks.astype(np.float64) - self.shift_m  # float64: correlations need the digits
        onehot = half_indicator(len(masks), half)
        self.counts += onehot.sum(axis=1).astype(np.int64)
        self.s += onehot @ scores
        self.s2 += onehot @ scores**2
        self.m += np.tensordot(onehot, centred, axes=1)
        self.m2 += np.tensordot(onehot, centred * centred, axes=1)
        weights = (onehot[:, None, :] * scores.T[None]).reshape(-1, len(masks))  # (2·R, b)
        self.sm += np.tensordot(weights, centred, axes=1).reshape(self.sm.shape)

    def scores_vary(self) -> bool:
        """Whether the similarity varied at all over the masks added (else no correlation exists)."""
        n = self.count
        return bool(n >= 2 and (_spread(n, self.s.sum(axis=0), self.s2.sum(axis=0)) > 0).all())

    def correlation(self, which: int | None = None) -> np.ndarray:
        """(R, H, W) Pearson correlation of each pixel's mask values with each score column."""
        part = halves(which)
        n = int(self.counts[part].sum())
        s, m = self.s[part].sum(axis=0), self.m[part].sum(axis=0)
        spread_s = _spread(n, s, self.s2[part].sum(axis=0))[:, None, None]
        spread_m = _spread(n, m, self.m2[part].sum(axis=0))[None]
        covariance = n * self.sm[part].sum(axis=0) - s[:, None, None] * m[None]
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
    image, target = check_request(model, image, target)
    check_cells(options, *image.shape[:2])
    scorer = Scorer(model, scoring_target(model, target))
    sums = CorrelationSums(*image.shape[:2], columns=1 if target.non_mate is None else 2)

    def values(which: int | None) -> np.ndarray:
        correlation = sums.correlation(which)
        return correlation[0] if len(correlation) == 1 else correlation[0] - correlation[1]

    extra = accumulate(sums, values, scorer, image, options, progress, "corr_rise", lambda scores: scores)
    if not sums.scores_vary():
        raise InvalidRequest("target", f"the similarity to the {'mate and non-mate' if target.non_mate is not None else 'mate'} "
                                       f"did not vary over {sums.count} masks: the model ignores the masked pixels, "
                                       "so there is nothing to correlate")
    return run.result(values(None), scorer.stats, signed=True, extra=extra)
