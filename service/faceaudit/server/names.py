"""Method and game names in requests -> registry entries, errors naming the request's field.

The registries name their own argument ("method", "game"); a request lists them in other fields
(Evaluate.methods, Audit.methods and games), and may send a name of any length, of which an error
quotes only the start (convert.shorten).
"""

from __future__ import annotations

from faceaudit.errors import InvalidRequest
from faceaudit.methods.registry import METHODS, Method, get_method
from faceaudit.metrics.registry import GAMES, Game, get_game
from faceaudit.server.convert import shorten


def method_named(name: str, field: str) -> Method:
    try:
        return get_method(name)
    except InvalidRequest as exc:
        raise InvalidRequest(field, f"unknown method {shorten(name)}; available: {', '.join(sorted(METHODS))}") from exc


def game_named(name: str, field: str) -> Game:
    try:
        return get_game(name)
    except InvalidRequest as exc:
        raise InvalidRequest(field, f"unknown game {shorten(name)}; available: {', '.join(sorted(GAMES))}") from exc
