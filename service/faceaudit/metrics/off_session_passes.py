"""Forward passes a game runs off the model's own session, for whoever counts a model's passes.

A server counts a model's forward passes where they run: in the batcher behind `model.session`.
Some games run passes elsewhere: on sessions of their own (layer_features' session exposing inner
layers, the sanity check's randomised copies of the model) and in white-box maps they make
(instrumented sessions). They add those passes here; the server opens a meter around the game
(`count_off_session_passes(sink)`) that passes them on to its count. One-off shape probes of a
session being built are not added (a map's forward_passes leaves them out too). Without an open
meter nothing is kept. This module touches nothing but its context variable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_sink: ContextVar[Callable[[int], None] | None] = ContextVar("faceaudit_off_session_passes", default=None)


@contextmanager
def count_off_session_passes(sink: Callable[[int], None]) -> Iterator[None]:
    """Hand `sink(images)` the off-session passes of the games this thread plays inside the block."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def add_off_session_passes(images: int) -> None:
    """`images` forward passes just ran off the model's session (nothing happens without an open meter)."""
    sink = _sink.get()
    if sink is not None and images:
        sink(images)
