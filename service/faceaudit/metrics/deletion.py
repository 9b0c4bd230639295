"""Deletion game (Petsiuk et al. 2018): remove the most important pixels first; the score should fall fast.

See metrics.causal_metric for the protocol, the score, the normalised area and the defaults
(input_zero baseline: the colour whose model input is 0, Petsiuk's deletion substrate; zero
is black pixels). Lower area is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from faceaudit.engine.prepare import PreparedModel
from faceaudit.metrics.causal_metric import CausalOptions, causal_metric
from faceaudit.metrics.common import GameItem, GameResult, PointSink, Progress


@dataclass(frozen=True)
class DeletionOptions(CausalOptions):
    """Deletion options: CausalOptions, removed pixels set to the zero model input by default (Petsiuk's)."""

    baseline: str = "input_zero"


def deletion(
    model: PreparedModel, *, items: Sequence[GameItem], options: DeletionOptions = DeletionOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Play deletion over `items` for every method's maps and the random baseline."""
    return causal_metric(model, game="deletion", insert=False, items=items, options=options,
                         on_point=on_point, progress=progress)
