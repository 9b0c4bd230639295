"""A face verification threshold τ from a false positive rate on impostor scores.

Scores are similarities (cosines, as faceaudit's scorer computes them): a pair is a match when its
score is ≥ τ. Given n impostor scores and a false positive rate α, the allowed number of false
positives is k = ⌊α·n⌋, with α read as the decimal the caller wrote (Fraction(str(α)), so that
0.29 × 100 impostors allows 29, not the 28 that float rounding of 0.29·100 would give; α·n less
than 1e-9 below a whole number counts as that number, but k ≤ n − 1 always, since α < 1).

Convention (ties, quantile): τ is the smallest float64 with at most k impostor scores ≥ τ, i.e. the
next float above s_(k+1), the (k+1)-th highest impostor score. So the false positive rate reached on
these impostors never exceeds α; where scores tie at s_(k+1), every tied impostor falls below τ
together and the reached rate is below α (it is reported). Among all thresholds with that false
positive rate this is the lowest, hence the one with the highest true positive rate on any genuine
scores. It is sklearn's roc_curve operating point "FPR ≤ α, largest TPR", except that τ is placed
just above an impostor score instead of at a genuine one (both give the same rates on these
scores; ours admits every future score above the worst rejected impostor).

Wang et al. (2025, §4.4) state τ as an L2 distance between embeddings (match when ≤ τ_L2) and do
not say whether the embeddings are L2-normalised first. Only for unit vectors is ‖a − b‖² = 2 − 2·cos,
so a τ_L2 corresponds to τ = 1 − τ_L2²/2 here only when it was measured on L2-normalised embeddings;
a distance between raw embeddings depends on their norms and has no cosine equivalent.

This module touches nothing but its arguments: no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from faceaudit.errors import InvalidRequest

__all__ = ["Threshold", "check_scores", "threshold_at_fpr"]


@dataclass(frozen=True)
class Threshold:
    """τ and what it achieves on the scores it was derived from."""

    tau: float
    fpr: float  # requested
    achieved_fpr: float  # impostors ≥ τ / impostors, ≤ fpr
    impostors: int
    tpr: float | None = None  # genuine ≥ τ / genuine, when genuine scores were given
    genuine: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        return {"tau": self.tau, "fpr": self.fpr, "achieved_fpr": self.achieved_fpr, "impostors": self.impostors,
                "tpr": self.tpr, "genuine": self.genuine}


def check_scores(name: str, scores: Sequence[float] | np.ndarray, *, allow_empty: bool = False) -> np.ndarray:
    """The scores as a float64 vector, or InvalidRequest naming `name` (not 1-D, empty, not finite)."""
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(name, "scores must be numbers") from exc
    if values.ndim != 1:
        raise InvalidRequest(name, f"expected a list of scores, got shape {values.shape}")
    if not allow_empty and values.size == 0:
        raise InvalidRequest(name, "at least one score is needed")
    if not np.isfinite(values).all():
        raise InvalidRequest(name, "scores must be finite (no NaN or infinity)")
    return values


def threshold_at_fpr(impostor_scores: Sequence[float] | np.ndarray, fpr: float,
                     genuine_scores: Sequence[float] | np.ndarray = ()) -> Threshold:
    """τ with a false positive rate of at most `fpr` on `impostor_scores` (see the module docstring).

    `fpr` must lie in [1/n, 1) for n impostor scores: below 1/n no impostor may pass, and the
    threshold would only say that the list is too short to measure such a rate.
    """
    impostors = check_scores("impostor_scores", impostor_scores)
    genuine = check_scores("genuine_scores", genuine_scores, allow_empty=True)
    n = impostors.size
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.integer, np.floating)) or not math.isfinite(fpr):
        raise InvalidRequest("fpr", f"{fpr!r} is not a finite number")
    if not 0 < fpr < 1:
        raise InvalidRequest("fpr", f"{fpr} must lie strictly between 0 and 1")
    # α·n within 1e-9 of a whole number is that number: 1/n written as a float (0.0833… for 1/12) must allow one;
    # but α < 1 allows fewer than all n, however close to 1 it is (1 − 1e-10 would otherwise round up to n)
    allowed = min(math.floor(Fraction(str(float(fpr))) * n + Fraction(1, 10**9)), n - 1)
    if allowed < 1:
        raise InvalidRequest("fpr", f"{fpr} is below 1/{n}: measuring it needs at least {math.ceil(1 / fpr)} "
                                    f"impostor scores, {n} were given")
    ranked = np.sort(impostors)[::-1]
    tau = float(np.nextafter(ranked[allowed], np.inf))  # ranked[allowed] is s_(k+1): the first rejected
    return Threshold(
        tau=tau, fpr=float(fpr), achieved_fpr=float(np.count_nonzero(impostors >= tau)) / n, impostors=n,
        tpr=float(np.count_nonzero(genuine >= tau)) / genuine.size if genuine.size else None, genuine=genuine.size,
    )
