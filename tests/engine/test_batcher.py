"""Cross-request batcher: same outputs as direct runs, merging, delay bound, limits, errors, cancel, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from faceaudit.engine.batcher import (
    Batcher, BatchedSession, BatcherClosed, RequestCancelled, bound, served,
)
from faceaudit.engine.runtime import RunStop, RuntimeOptions, Session
from faceaudit.engine.scorer import ClassTarget, Scorer, embed
from faceaudit.errors import InvalidRequest, LimitExceeded, ModelOutputError
from faceaudit.testing import zoo
from tests.conftest import prepared
from tests.engine.hostile_graphs import endless_loop_classifier


class Scripted:
    """A session that records the batches it runs and can be held or made to fail."""

    def __init__(self, session: Session) -> None:
        self.inner = session
        self.sizes: list[int] = []
        self.rows: list[np.ndarray] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_at: dict[int, str] = {}  # run index -> error message

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, batch: np.ndarray, stop: RunStop | None = None) -> list[np.ndarray]:
        self.entered.set()
        self.hold.wait(10)
        self.sizes.append(len(batch))
        self.rows.append(batch.copy())
        if len(self.sizes) - 1 in self.fail_at:
            raise RuntimeError(self.fail_at[len(self.sizes) - 1])
        return self.inner.run(batch, stop)


class Recorder:
    """A BatchObserver keeping what it was told."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, int, float]] = []
        self.depths: list[int] = []

    def observe_batch(self, model: str, images: int, queue_seconds, run_seconds: float) -> None:
        self.batches.append((model, images, len(queue_seconds), run_seconds))

    def set_queue_depth(self, model: str, images: int) -> None:
        self.depths.append(images)


class Owner:
    """Stands for a gRPC call: requests are grouped (and cancelled) by owner."""


@pytest.fixture(scope="module")
def linear():
    return prepared(zoo.linear_classifier(), {"kind": "classifier"}, max_batch=16)


def inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 1, size=(n, 3, 8, 8)).astype(np.float32)


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on threads that start together; their results in order."""
    start = threading.Barrier(len(calls))

    def go(call: Callable[[], Any]) -> Any:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


def test_merged_results_equal_direct_runs_exactly_and_full_batches_do_not_wait(linear, rng):
    spy = Scripted(linear.session)
    recorder = Recorder()
    batcher = Batcher(spy, model="linear", max_queue_delay=1.0, observer=recorder)
    batches = [inputs(rng, n) for n in (3, 5, 8)]  # 16 images: exactly one full batch
    try:
        started = time.perf_counter()
        results = concurrently([lambda b=b: batcher.submit(b).result(5) for b in batches])
        elapsed = time.perf_counter() - started
    finally:
        batcher.close()
    assert spy.sizes == [16]  # one runtime call for the three callers
    assert elapsed < 0.8  # a full batch runs at once, not after max_queue_delay
    for batch, result in zip(batches, results):
        (direct,) = linear.session.run(batch)
        np.testing.assert_array_equal(result.outputs[0], direct)
        # independent check: the model is x.reshape(n, -1) @ W.T + b
        assert result.batch_images == 16 and result.outputs[0].shape == (len(batch), 5)
    assert [(m, n, q) for m, n, q, _ in recorder.batches] == [("linear", 16, 3)]
    assert max(recorder.depths) in (3, 5, 8, 11, 13, 16) and recorder.depths[-1] == 0


def test_partial_merges_are_padded_to_a_power_of_two_with_zero_rows(linear, rng):
    spy = Scripted(linear.session)
    spy.hold.clear()
    batcher = Batcher(spy, model="linear", max_queue_delay=0.0)
    try:
        first = batcher.submit(inputs(rng, 1))
        assert spy.entered.wait(5)  # the runtime thread holds the first request
        waiting = [batcher.submit(inputs(rng, n)) for n in (2, 3)]  # queue while it is busy
        spy.hold.set()
        for future in [first, *waiting]:
            future.result(5)
    finally:
        batcher.close()
    assert spy.sizes == [1, 8]  # 2 + 3 = 5 real rows, padded like Session.run pads 5
    assert not spy.rows[1][5:].any()


def test_a_lone_partial_request_waits_at_most_max_queue_delay(linear, rng):
    batcher = Batcher(linear.session, model="linear", max_queue_delay=0.2)
    try:
        started = time.perf_counter()
        result = batcher.submit(inputs(rng, 2)).result(5)
        elapsed = time.perf_counter() - started
        full = batcher.submit(inputs(rng, 16)).result(5)
    finally:
        batcher.close()
    assert 0.19 <= result.queue_seconds and elapsed < 1.0  # waited for company, then ran alone
    assert full.queue_seconds < 0.15  # a full batch has nothing to wait for


def test_queue_full_fails_at_once_then_serves_again(linear, rng):
    spy = Scripted(linear.session)
    spy.hold.clear()
    batcher = Batcher(spy, model="linear", max_queue_delay=0.0, max_queue_images=16)
    try:
        running = batcher.submit(inputs(rng, 4))
        assert spy.entered.wait(5)
        queued = [batcher.submit(inputs(rng, 8)), batcher.submit(inputs(rng, 8))]  # 16 of 16 images
        started = time.perf_counter()
        with pytest.raises(LimitExceeded, match="queue of model 'linear' is full"):
            batcher.submit(inputs(rng, 1))
        assert time.perf_counter() - started < 1.0  # refused, not blocked until the queue drains
        spy.hold.set()
        for future in [running, *queued]:
            future.result(5)
        batcher.submit(inputs(rng, 1)).result(5)  # room again
    finally:
        batcher.close()
    with pytest.raises(InvalidRequest, match="max_queue_images"):
        Batcher(linear.session, model="linear", max_queue_images=8)


def test_a_failed_run_reaches_every_caller_of_its_batch_and_the_batcher_keeps_serving(linear, rng):
    spy = Scripted(linear.session)
    spy.hold.clear()
    spy.fail_at = {1: "kernel exploded", 3: "alone"}
    batcher = Batcher(spy, model="linear", max_queue_delay=0.0)
    try:
        blocker = batcher.submit(inputs(rng, 1))  # run 0
        assert spy.entered.wait(5)
        doomed = [batcher.submit(inputs(rng, 2)), batcher.submit(inputs(rng, 3))]  # merged: run 1
        spy.hold.set()
        blocker.result(5)
        errors = []
        for future in doomed:
            with pytest.raises(ModelOutputError, match=r"shared by 2 requests \(5 images\): kernel exploded") as info:
                future.result(5)
            errors.append(info.value)
        assert errors[0] is not errors[1]  # each caller raises (and chains onto) its own exception
        assert batcher.submit(inputs(rng, 2)).result(5).outputs[0].shape == (2, 5)  # run 2: still serving
        with pytest.raises(RuntimeError, match="alone"):  # run 3: a lone request gets the raw error; the scorer wraps it
            batcher.submit(inputs(rng, 1)).result(5)
    finally:
        batcher.close()


def test_cancel_drops_the_owners_queued_requests_and_refuses_its_later_ones(linear, rng):
    spy = Scripted(linear.session)
    spy.hold.clear()
    batcher = Batcher(spy, model="linear", max_queue_delay=0.0)
    session = BatchedSession(batcher)
    call_a, call_b = session.bind(Owner()), session.bind(Owner())
    try:
        running = batcher.submit(inputs(rng, 1))
        assert spy.entered.wait(5)
        with ThreadPoolExecutor(3) as pool:
            a_runs = [pool.submit(call_a.run, inputs(rng, 2)) for _ in range(2)]
            b_rows = inputs(rng, 3)
            b_run = pool.submit(call_b.run, b_rows)
            deadline = time.perf_counter() + 5
            while batcher._queued_images < 7 and time.perf_counter() < deadline:
                time.sleep(0.001)
            assert session.cancel(call_a.owner) == 2
            for future in a_runs:
                with pytest.raises(RequestCancelled, match="cancelled"):
                    future.result(5)
            with pytest.raises(RequestCancelled):
                call_a.run(inputs(rng, 1))  # a cancelled call's next batch is refused
            spy.hold.set()
            running.result(5)
            np.testing.assert_array_equal(b_run.result(5)[0], linear.session.run(b_rows)[0])
    finally:
        batcher.close()
    assert spy.sizes == [1, 3]  # call A's four images never ran; call B's three did
    np.testing.assert_array_equal(spy.rows[1][:3], b_rows)
    assert call_b.stats.requests == 1 and call_b.stats.images == 3 and call_b.stats.queue_seconds > 0
    assert call_a.stats.requests == 0


def test_close_drains_queued_work_or_fails_it_with_a_clear_error(linear, rng):
    for drain in (True, False):
        spy = Scripted(linear.session)
        spy.hold.clear()
        batcher = Batcher(spy, model="linear", max_queue_delay=0.0)
        running = batcher.submit(inputs(rng, 1))
        assert spy.entered.wait(5)
        queued = batcher.submit(inputs(rng, 2))
        closer = threading.Thread(target=batcher.close, kwargs={"drain": drain})
        closer.start()
        deadline = time.perf_counter() + 5
        while not batcher._closing and time.perf_counter() < deadline:
            time.sleep(0.001)
        with pytest.raises(BatcherClosed, match="shutting down"):
            batcher.submit(inputs(rng, 1))
        spy.hold.set()
        closer.join(5)
        assert not closer.is_alive() and not batcher._thread.is_alive()
        if drain:
            assert running.result(5).outputs[0].shape == (1, 5)  # the batch already running finishes
            assert queued.result(5).outputs[0].shape == (2, 5) and spy.sizes == [1, 2]
        else:  # shutdown: the running batch is stopped too (a forward pass may never end)
            with pytest.raises(BatcherClosed, match="shutting down: its batch was stopped while it ran"):
                running.result(5)
            with pytest.raises(BatcherClosed, match="shut down before this request ran"):
                queued.result(5)
            assert spy.sizes == [1]


def test_scorers_of_a_served_model_share_batches_and_score_as_without_batcher(linear, rng):
    recorder = Recorder()
    model = served(linear, "linear", max_queue_delay=0.2, observer=recorder)
    assert model.derived is linear.derived and model.session.padded_size(5) == 5
    images = [rng.uniform(0, 255, size=(6, 8, 8, 3)).astype(np.float32) for _ in range(4)]
    expected = [Scorer(linear, ClassTarget(2)).score([x]) for x in images]
    try:
        got = concurrently([lambda x=x: Scorer(model, ClassTarget(2)).score([x]) for x in images])
        references = embed(bound(model, Owner()), images[0])
    finally:
        model.session.close()
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(references, embed(linear, images[0]))
    sizes = [images_in_batch for _, images_in_batch, _, _ in recorder.batches]
    assert sum(sizes) == 4 * 6 + 6 and max(sizes) > 6  # every image once; some batch merged callers
    with pytest.raises(ValueError, match="already batched"):
        served(model, "linear")


def test_batch_dependent_models_are_never_merged_across_callers(rng):
    quantised = prepared(zoo.dynamic_quantized_classifier(), max_batch=8)
    assert quantised.batch.dependent
    spy = Scripted(quantised.session)
    model = served(quantised, "q", max_queue_delay=1.0)
    model.session.batcher.session = spy  # count the runtime calls of the batcher's session
    batches = [rng.uniform(0, 1, size=(n, 3, 16, 16)).astype(np.float32) for n in (2, 3)]
    try:
        started = time.perf_counter()
        results = concurrently([lambda b=b: model.session.run(b) for b in batches])
        elapsed = time.perf_counter() - started
    finally:
        model.session.close()
    assert sorted(spy.sizes) == [2, 3] and elapsed < 0.8  # one runtime call per caller, no waiting for company
    for batch, (out,) in zip(batches, results):
        np.testing.assert_array_equal(out, quantised.session.run(batch)[0])  # as a direct run pads it
    exact = served(prepared(zoo.dynamic_quantized_classifier(), max_batch=8, exact=True), "q")
    assert exact.session.max_batch == 1  # exact: one image per runtime call, kept by the batcher
    exact.session.close()


def test_fixed_batch_models_merge_up_to_their_size_and_always_pad_to_it(rng):
    fixed = prepared(zoo.vgg_classifier(batch=4, height=16, width=16))
    assert fixed.session.fixed_batch == 4 and fixed.session.max_batch == 4
    spy = Scripted(fixed.session)
    spy.hold.clear()
    batcher = Batcher(spy, model="vgg4", max_queue_delay=0.0)
    batches = [rng.uniform(0, 1, size=(n, 3, 16, 16)).astype(np.float32) for n in (1, 1, 2, 3)]
    try:
        futures = [batcher.submit(batches[0])]
        assert spy.entered.wait(5)
        futures += [batcher.submit(b) for b in batches[1:]]
        spy.hold.set()
        results = [f.result(5).outputs[0] for f in futures]
    finally:
        batcher.close()
    assert spy.sizes == [1, 4, 3]  # [1] alone and [3] alone (Session.run pads them), [1, 2] merged and padded
    for batch, out in zip(batches, results):
        np.testing.assert_allclose(out, fixed.session.run(batch)[0], rtol=1e-5, atol=1e-6)


def test_a_running_batch_is_stopped_once_every_call_in_it_is_cancelled_and_the_batcher_serves_on(rng):
    # A forward pass that never ends (a graph's Loop): only cancelling the calls can end it.
    session = Session(endless_loop_classifier(), "input", ["logits"], RuntimeOptions(threads=1))
    batcher = Batcher(session, model="loop", max_queue_delay=0.2)
    first, second = Owner(), Owner()
    images = rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)
    try:
        runs = [batcher.submit(images, first), batcher.submit(images, second)]  # merged: one runtime batch
        deadline = time.perf_counter() + 5
        while len(batcher._running) < 2 and time.perf_counter() < deadline:
            time.sleep(0.005)
        assert [r.owner for r in batcher._running] == [first, second]
        assert batcher.cancel(first) == 0  # nothing queued; the batch goes on for the live call
        time.sleep(0.3)
        assert not any(run.done() for run in runs)
        started = time.perf_counter()
        batcher.cancel(second)
        for run in runs:
            with pytest.raises(RequestCancelled, match="cancelled while its batch ran"):
                run.result(5)
        assert time.perf_counter() - started < 5
        third = Owner()
        later = batcher.submit(images, third)  # the runtime thread is free again
        while not batcher._running and time.perf_counter() < deadline + 5:
            time.sleep(0.005)
        batcher.cancel(third)
        with pytest.raises(RequestCancelled):
            later.result(5)
    finally:
        batcher.close(drain=False, timeout=5)
    assert not batcher._thread.is_alive()



def test_closing_without_drain_stops_a_running_batch_of_a_live_call_and_fails_the_queue(rng):
    # Shutdown: the runtime thread must end even though a live call still waits on a batch that never ends.
    session = Session(endless_loop_classifier(), "input", ["logits"], RuntimeOptions(threads=1))
    batcher = Batcher(session, model="loop", merge=False)
    images = rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)
    running, queued = batcher.submit(images, Owner()), batcher.submit(images, Owner())
    deadline = time.perf_counter() + 5
    while not batcher._running and time.perf_counter() < deadline:
        time.sleep(0.005)
    started = time.perf_counter()
    batcher.close(drain=False, timeout=5)
    assert time.perf_counter() - started < 4 and not batcher._thread.is_alive()
    for future in (running, queued):
        with pytest.raises(BatcherClosed, match="shutting down|shut down before"):
            future.result(1)

