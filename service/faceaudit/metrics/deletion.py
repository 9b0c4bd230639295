"""Deletion game (Petsiuk et al. 2018): remove the most important pixels first; the score should fall fast.

See metrics.causal_metric for the protocol, the score, the normalised area and the defaults
(zero baseline, Petsiuk's deletion substrate). Lower area is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from faceaudit.engine.prepare import PreparedModel
from faceaudit.metrics.causal_metric import CausalOptions, causal_metric
from faceaudit.metrics.common import GameItem, GameResult, PointSink, Progress


@dataclass(frozen=True)
class DeletionOptions(CausalOptions):
    """Deletion options: CausalOptions with removed pixels set to black by default."""

    baseline: str = "zero"


def deletion(
    model: PreparedModel, *, items: Sequence[GameItem], options: DeletionOptions = DeletionOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Play deletion over `items` for every method's maps and the random baseline."""
    return causal_metric(model, game="deletion", insert=False, items=items, options=options,
                         on_point=on_point, progress=progress)
