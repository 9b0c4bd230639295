"""The scorer's caller-side time split into perturbation, inference and aggregation, against planted sleeps."""

from __future__ import annotations

import time

import numpy as np

from faceaudit.engine.phases import PhaseClock, current_clock, measure_phases
from faceaudit.engine.scorer import ClassTarget, Scorer
from faceaudit.testing import zoo

from tests.conftest import prepared


def test_planted_sleeps_land_in_their_phases():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"}, max_batch=4)
    rng = np.random.default_rng(0)

    def chunks():
        for _ in range(5):
            time.sleep(0.04)  # making the perturbations
            yield rng.uniform(0, 255, size=(3, 8, 8, 3)).astype(np.float32)

    with measure_phases() as clock:
        started = time.perf_counter()
        for _ in Scorer(model, ClassTarget(1)).stream(chunks()):
            time.sleep(0.02)  # the consumer aggregating the scores
        wall = time.perf_counter() - started
    seconds = clock.seconds()
    assert seconds["perturbation"] >= 0.2 and seconds["aggregation"] >= 0.1
    assert sum(seconds.values()) <= wall


def test_without_an_open_clock_nothing_is_kept_and_clocks_nest():
    assert current_clock() is not current_clock()  # a throw-away clock each time
    outer = PhaseClock()
    with measure_phases(outer):
        assert current_clock() is outer
        with measure_phases() as inner:
            assert current_clock() is inner
        assert current_clock() is outer
