"""The off-session pass meter: what a game adds reaches the open meter's sink, and only inside its block."""

from __future__ import annotations

import threading

from faceaudit.metrics.off_session_passes import add_off_session_passes, count_off_session_passes


def test_passes_reach_the_open_meter_only():
    seen: list[int] = []
    add_off_session_passes(5)  # no meter open: nothing kept, nothing raised
    with count_off_session_passes(seen.append):
        add_off_session_passes(3)
        add_off_session_passes(0)  # nothing ran: the sink is not bothered
        inner: list[int] = []
        with count_off_session_passes(inner.append):
            add_off_session_passes(2)
        add_off_session_passes(4)
        other = threading.Thread(target=add_off_session_passes, args=(7,))  # another thread's games: not ours
        other.start()
        other.join()
    add_off_session_passes(6)
    assert seen == [3, 4] and inner == [2]
