from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from faceaudit.engine.scorer import ClassTarget, Scorer
from faceaudit.engine.threads import single_threaded_blas
from faceaudit.testing import zoo

from tests.conftest import prepared


def _blas_threads() -> list[int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # make sure BLAS is loaded
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_blas_runs_single_threaded_while_a_stream_is_scored_and_is_restored_after():
    before = _blas_threads()
    seen: list[list[int]] = []
    scorer = Scorer(prepared(zoo.linear_classifier(), {"kind": "classifier"}), ClassTarget(0))

    def chunks():
        for _ in range(2):
            seen.append(_blas_threads())
            yield np.zeros((4, 8, 8, 3), np.float32)

    list(scorer.stream(chunks()))
    assert all(threads == [1] * len(before) for threads in seen)
    assert _blas_threads() == before


def test_nested_and_overlapping_limits_restore_only_at_the_last_exit():
    before = _blas_threads()
    outer = single_threaded_blas()
    outer.__enter__()
    with single_threaded_blas():
        assert set(_blas_threads()) <= {1}
    assert set(_blas_threads()) <= {1}  # the outer stream is still running
    outer.__exit__(None, None, None)
    assert _blas_threads() == before


def test_a_limit_set_by_someone_else_meanwhile_is_left_alone():
    from threadpoolctl import threadpool_limits

    before = _blas_threads()
    stream = single_threaded_blas()
    stream.__enter__()
    other = threadpool_limits(limits=3, user_api="blas")  # another library sets its own limit
    stream.__exit__(None, None, None)
    assert set(_blas_threads()) == {3}  # not overwritten with our saved original
    other.restore_original_limits()
    threadpool_limits(limits=before[0], user_api="blas")
