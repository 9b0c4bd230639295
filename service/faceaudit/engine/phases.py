"""Where one job's caller-side time goes: perturbation, inference, aggregation.

The server opens a clock around a job (`with measure_phases() as clock:`) in the thread that runs
the method; `Scorer.stream`, running in that thread, adds to it: time spent making perturbed images
and converting them to model input (perturbation), waiting for the runtime (inference), and in the
consumer between two yielded chunks of scores (aggregation). Without an open clock nothing is kept.
This module touches nothing but its context variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass


@dataclass
class PhaseClock:
    perturbation: float = 0.0
    inference: float = 0.0
    aggregation: float = 0.0

    def seconds(self) -> dict[str, float]:
        return asdict(self)


_current: ContextVar[PhaseClock | None] = ContextVar("faceaudit_phase_clock", default=None)


@contextmanager
def measure_phases(clock: PhaseClock | None = None) -> Iterator[PhaseClock]:
    """Open `clock` (a new one by default) for the scorers this thread runs inside the block."""
    clock = clock if clock is not None else PhaseClock()
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)


def current_clock() -> PhaseClock:
    """The open clock, or a throw-away one (so callers need no branch)."""
    return _current.get() or PhaseClock()
