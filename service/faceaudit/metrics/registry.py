"""The catalogue of evaluation games: name → function, options class, inputs it needs, model kinds.

A game's registry name is its file name (`metrics/confidence.py` → "confidence"); hyphens are
accepted too. The gRPC service, the audit and the CLI play games through `evaluate` and nowhere
else. `inputs` are the keyword arguments a game takes besides the model, its options, `on_point`
and `progress` (most take `items`, GameItems carrying the maps); `needs` says what every item
must carry besides its maps ("region": a ground-truth region).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import Progress, options_from
from faceaudit.metrics.common import GameResult, PointSink
from faceaudit.metrics.confidence import ConfidenceOptions, confidence
from faceaudit.metrics.correspondence import CorrespondenceOptions, correspondence
from faceaudit.metrics.deletion import DeletionOptions, deletion
from faceaudit.metrics.hiding_game import HidingGameOptions, hiding_game
from faceaudit.metrics.inpainting_game import InpaintingGameOptions, inpainting_game
from faceaudit.metrics.insertion import InsertionOptions, insertion
from faceaudit.metrics.invariance import InvarianceOptions, invariance
from faceaudit.metrics.layer_verification import LayerVerificationOptions, layer_verification
from faceaudit.metrics.pointing_game import PointingGameOptions, pointing_game
from faceaudit.metrics.sanity_check import SanityCheckOptions, sanity_check

BOTH = frozenset({"classifier", "embedding"})
EMBEDDING = frozenset({"embedding"})
ITEMS = frozenset({"items"})
IMAGES = frozenset({"images"})
PAIRS = frozenset({"images", "pairs", "genuine"})
PARTS = frozenset({"images", "parts"})
REGION = frozenset({"region"})
QUADRUPLETS = frozenset({"quadruplets"})


@dataclass(frozen=True)
class Game:
    name: str
    run: Callable[..., GameResult]
    options: type
    inputs: frozenset[str]  # keyword inputs of the game function besides model, options, on_point, progress
    kinds: frozenset[str]  # model kinds the game is played on
    needs: frozenset[str] = frozenset()  # what every item must carry besides maps, e.g. "region"
    maps: bool = True  # whether the game judges saliency maps (False: an analysis of the model's features)


GAMES: dict[str, Game] = {
    g.name: g
    for g in (
        Game("hiding_game", hiding_game, HidingGameOptions, ITEMS, BOTH),
        Game("deletion", deletion, DeletionOptions, ITEMS, BOTH),
        Game("insertion", insertion, InsertionOptions, ITEMS, BOTH),
        Game("confidence", confidence, ConfidenceOptions, ITEMS, BOTH),
        Game("pointing_game", pointing_game, PointingGameOptions, ITEMS, BOTH, REGION),
        Game("inpainting_game", inpainting_game, InpaintingGameOptions, ITEMS, EMBEDDING, QUADRUPLETS),
        Game("sanity_check", sanity_check, SanityCheckOptions, ITEMS, BOTH),
        Game("layer_verification", layer_verification, LayerVerificationOptions, PAIRS, BOTH, maps=False),
        Game("correspondence", correspondence, CorrespondenceOptions, PARTS, BOTH, REGION, maps=False),
        Game("invariance", invariance, InvarianceOptions, IMAGES, BOTH, maps=False),
    )
}


def get_game(name: str) -> Game:
    if not isinstance(name, str):
        raise InvalidRequest("game", f"{name!r} is not a game name; available: {', '.join(sorted(GAMES))}")
    key = name.strip().lower().replace("-", "_")
    if key not in GAMES:
        raise InvalidRequest("game", f"unknown game {name!r}; available: {', '.join(sorted(GAMES))}")
    return GAMES[key]


def evaluate(
    model: PreparedModel, game: str, *, options: Mapping[str, Any] | Any | None = None,
    on_point: PointSink | None = None, progress: Progress | None = None, **inputs: Any,
) -> GameResult:
    """Play a game by name, with its options class or loosely typed values (from the CLI or a request)."""
    entry = get_game(game)
    kind = model.spec.require("kind")
    if kind not in entry.kinds:
        raise InvalidRequest("game", f"{entry.name} is played on {' and '.join(sorted(entry.kinds))} models, not {kind}s")
    for name in sorted(inputs.keys() - entry.inputs):
        raise InvalidRequest(name, f"{entry.name} takes no {name!r}; it takes {', '.join(sorted(entry.inputs))}")
    for name in sorted(entry.inputs - inputs.keys()):
        raise InvalidRequest(name, f"{entry.name} needs {name!r}")
    chosen = options if isinstance(options, entry.options) else options_from(entry.options, options)
    return entry.run(model, options=chosen, on_point=on_point, progress=progress, **inputs)


def games_for(kind: str) -> list[str]:
    """The names of the games played on models of `kind`, in registry order."""
    return [name for name, game in GAMES.items() if kind in game.kinds]
