"""The forward passes one request may spend on its maps (--max-request-passes).

A method bounds its own map (methods.common.MAX_FORWARD_PASSES); a request asks for many maps
(Explain: images × targets; Evaluate: items × methods), so the server bounds their sum too. The
methods report progress(done, total, phase) in forward passes, the first report after their first
chunk; from it the budget estimates the whole request (each map not yet run costs what the last
map of its method announced) and refuses it as soon as the estimate is over the limit, before the
rest runs. A finished map counts what it really ran. So a request runs at most the limit plus
about one chunk (the scorer fills the next batch while one runs), if its methods report progress
as they go (the white-box ones that do not run a few passes a map). This module only counts.
"""

from __future__ import annotations

from collections import Counter

from faceaudit.errors import LimitExceeded
from faceaudit.methods.common import Progress

DEFAULT_MAX_REQUEST_PASSES = 5_000_000


class PassBudget:
    """The running estimate of one request's forward passes against `limit` (None: no limit).

    `plan` names the method of each map in the order they run; `field` is the request's fields
    that multiply maps, `map_field` the field that sets one map's passes (the errors name them).
    """

    def __init__(self, limit: int | None, plan: list[str], field: str, map_field: str) -> None:
        self.limit = limit
        self._plan = plan
        self._field, self._map_field = field, map_field
        self._waiting = Counter(plan)  # maps not yet started, per method
        self._started: set[int] = set()
        self._announced: dict[str, int] = {}  # a map's passes, per method: its latest map's total
        self._current = 0  # the running map's total so far
        self._spent = 0  # passes of the finished maps, as counted by their results

    def progress(self, k: int, then: Progress) -> Progress:
        """Map k's progress callback: checks the estimate, then passes the report on to `then`."""

        def report(done: int, total: int, phase: str) -> None:
            self._start(k)
            self._current = max(self._current, done, total)
            self._announced[self._plan[k]] = self._current
            self._check(k)
            then(done, total, phase)

        return report

    def finished(self, k: int, passes: int) -> None:
        """Map k ran `passes` forward passes; refuses before the next map if the rest would go over."""
        self._start(k)
        self._spent += passes
        self._announced[self._plan[k]] = max(passes, self._current)
        self._current = 0
        self._check(k)

    def _start(self, k: int) -> None:
        if k not in self._started:
            self._started.add(k)
            self._waiting[self._plan[k]] -= 1
            self._current = 0

    def _check(self, k: int) -> None:
        if self.limit is None:
            return
        rest = sum(count * self._announced.get(method, 0) for method, count in self._waiting.items())
        estimate = self._spent + self._current + rest
        if estimate <= self.limit:
            return
        method, per_map = self._plan[k], self._announced[self._plan[k]]
        if per_map > self.limit:
            raise LimitExceeded(f"{self._map_field}: one {method} map takes {per_map:,} forward passes; this server "
                                f"allows {self.limit:,} per request (--max-request-passes)")
        raise LimitExceeded(f"{self._field}: {len(self._plan)} maps would take about {estimate:,} forward passes "
                            f"({method}: {per_map:,} a map); this server allows {self.limit:,} per request "
                            "(--max-request-passes): ask for fewer maps, or fewer passes a map")
