"""A dependency-free progress bar for the CLI: a `Progress` callback writing to stderr.

On a terminal it redraws one line at most ten times a second; elsewhere (CI logs, pipes) it prints
a line at each tenth of the work, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self._tty = self.stream.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._started = time.perf_counter()

    def __call__(self, done: int, total: int, phase: str) -> None:
        fraction = done / total if total else 1.0
        now = time.perf_counter()
        # A method that stops early (RISE's target_fidelity) ends with phase "<method>: converged"
        # and done < total: that call is the last one and must be drawn and end the line.
        final = done >= total or phase.endswith(": converged")
        if self._tty:
            if now - self._last_draw < 0.1 and not final:
                return
            self._last_draw = now
            filled = int(self.width * fraction)
            bar = "#" * filled + "." * (self.width - filled)
            end = "\n" if final else ""
            self.stream.write(f"\r{self.label} {phase} [{bar}] {fraction:4.0%} {done}/{total} {now - self._started:5.1f}s{end}")
        else:
            tenth = int(fraction * 10)
            if tenth == self._last_tenth and not final:
                return
            self._last_tenth = tenth
            self.stream.write(f"{self.label} {phase}: {done}/{total} ({fraction:.0%}, {now - self._started:.1f}s)\n")
        self.stream.flush()
