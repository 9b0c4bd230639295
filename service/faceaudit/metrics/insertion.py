"""Insertion game (Petsiuk et al. 2018): insert the most important pixels first; the score should rise fast.

See metrics.causal_metric for the protocol, the score, the normalised area and the defaults
(petsiuk_blur baseline: Petsiuk's insertion substrate, their 11×11 blur of the normalised
input). Higher area is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from faceaudit.engine.prepare import PreparedModel
from faceaudit.metrics.causal_metric import CausalOptions, causal_metric
from faceaudit.metrics.common import GameItem, GameResult, PointSink, Progress


@dataclass(frozen=True)
class InsertionOptions(CausalOptions):
    """Insertion options: CausalOptions starting from Petsiuk's blurred image by default."""

    baseline: str = "petsiuk_blur"


def insertion(
    model: PreparedModel, *, items: Sequence[GameItem], options: InsertionOptions = InsertionOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Play insertion over `items` for every method's maps and the random baseline."""
    return causal_metric(model, game="insertion", insert=True, items=items, options=options,
                         on_point=on_point, progress=progress)
