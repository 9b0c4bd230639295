"""Cross-request dynamic batching of one model's forward passes, like Triton's dynamic batcher.

Concurrent requests (each a batch of preprocessed model inputs, often a partial one: the last
batch of a stream, a flushed chunk, reference embeddings) are queued and merged, first come first
served, into shared runtime batches of up to `max_batch` images. When the queue holds less than a
full batch, the runtime thread waits at most `max_queue_delay` seconds (from the oldest request's
arrival) for more. Requests are never split; merged batches are padded like `Session.run` pads
(power-of-two buckets, or the model's fixed batch size), so the runtime still sees only a few
shapes. One runtime thread per model runs the batches and hands each caller its rows back.

The queue is bounded in images: a request that does not fit fails at once with LimitExceeded, so
an overloaded server sheds load instead of letting calls wait past their deadlines. A run's error
reaches every caller of that batch; the batcher keeps serving. Requests of a cancelled owner (a
gRPC call that ended) leave the queue and the owner's later requests are refused; a running batch
whose every request belongs to cancelled owners is stopped (`runtime.RunStop`), so that a forward
pass that runs for ever (a graph's Loop) does not outlive its calls. A batch shared with a live
call runs to its end, unless the server shuts down (`close(drain=False)` stops it).

Batch-dependent models (`BatchBehaviour.dependent`, e.g. dynamically quantised graphs) are never
merged with other callers' images: their outputs would then depend on unrelated concurrent traffic,
so a map could not be reproduced. Each request runs as its own runtime batch, padded exactly as
`Session.run` pads it, so a caller gets the outputs a direct `Session.run` would give. With
`RuntimeOptions.exact` the prepared session already runs one image per call (max_batch 1), which
the batcher keeps.

`BatchedSession` has the interface the scorer uses from `runtime.Session`, so
`served(prepared, ...)` makes every Scorer of that model share batches without any change to
methods or metrics. This module may touch onnxruntime only through `runtime.Session`; it knows
nothing of gRPC or Prometheus (telemetry comes in through `BatchObserver`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RunStop, RunStopped, Session
from faceaudit.errors import FaceAuditError, InvalidRequest, LimitExceeded, ModelOutputError

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_DELAY = 0.002  # seconds; a lone partial batch waits at most this long
DEFAULT_QUEUE_BATCHES = 16  # default queue bound, in runtime batches of images


class RequestCancelled(FaceAuditError):
    """The request's owner was cancelled (its gRPC call ended) before the request ran (CANCELLED)."""


class BatcherClosed(FaceAuditError):
    """The model's batcher is shutting down and takes no more work (UNAVAILABLE)."""


class BatchObserver(Protocol):
    """What a batcher reports (server.telemetry.Telemetry implements it)."""

    def observe_batch(self, model: str, images: int, queue_seconds: Sequence[float], run_seconds: float) -> None: ...

    def set_queue_depth(self, model: str, images: int) -> None: ...


@dataclass(frozen=True)
class BatchResult:
    """One request's outputs (cut to its rows) and where its time went."""

    outputs: list[np.ndarray]
    queue_seconds: float  # from submit until its runtime batch started
    run_seconds: float  # the runtime batch it shared
    batch_images: int  # images in that batch, this request's included


@dataclass(eq=False)
class _Request:
    batch: np.ndarray
    owner: object | None
    future: Future[BatchResult]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """The queue and runtime thread of one model's session."""

    def __init__(
        self, session: Session, *, model: str, merge: bool = True,
        max_queue_delay: float = DEFAULT_MAX_QUEUE_DELAY, max_queue_images: int | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if not 0.0 <= max_queue_delay <= 1.0:
            raise InvalidRequest("max_queue_delay", f"{max_queue_delay} s is outside 0..1 s")
        limit = max_queue_images if max_queue_images is not None else DEFAULT_QUEUE_BATCHES * session.max_batch
        if limit < session.max_batch:
            raise InvalidRequest("max_queue_images", f"{limit} is below the model's max batch {session.max_batch}: "
                                                     "a full batch could never be queued")
        self.session = session
        self.model = model
        self.merge = merge
        self.max_batch = session.max_batch
        self.max_queue_delay = max_queue_delay
        self.max_queue_images = limit
        self._observer = observer
        self._queue: deque[_Request] = deque()
        self._queued_images = 0
        self._row: tuple[tuple[int, ...], np.dtype] | None = None  # per-image shape and dtype of the first request
        self._merged: np.ndarray | None = None  # reused input buffer of merged batches (runtime thread only)
        self._cancelled: weakref.WeakSet[object] = weakref.WeakSet()
        self._running: list[_Request] = []  # the batch the runtime thread runs now, and its stop
        self._stop: RunStop | None = None
        self._closing = False
        self._abandoned = False  # close(drain=False) stopped the running batch
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name=f"faceaudit-batcher-{model}", daemon=True)
        self._thread.start()

    # --- callers --------------------------------------------------------------------------------
    def submit(self, batch: np.ndarray, owner: object | None = None) -> Future[BatchResult]:
        """Queue a batch of 1..max_batch model inputs; `owner` (weak-referenceable) groups requests for cancel."""
        n = len(batch)
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"a request holds 1..{self.max_batch} images, got {n}")  # a caller bug, not user input
        row = (tuple(batch.shape[1:]), batch.dtype)
        request = _Request(batch, owner, Future())
        with self._cond:
            if self._closing:
                raise BatcherClosed(f"model {self.model!r} is shutting down and takes no new work")
            if owner is not None and owner in self._cancelled:
                raise RequestCancelled(f"the call using model {self.model!r} was cancelled")
            if self._row is None:
                self._row = row
            elif row != self._row:
                raise ValueError(f"inputs of shape {row[0]} {row[1]} do not match the model's {self._row[0]} {self._row[1]}")
            if self._queued_images + n > self.max_queue_images:
                raise LimitExceeded(
                    f"max_queue_images: the queue of model {self.model!r} is full ({self._queued_images} of "
                    f"{self.max_queue_images} images waiting); retry later or raise --max-queue-images"
                )
            self._queue.append(request)
            self._queued_images += n
            self._report_depth()
            self._cond.notify()
        return request.future

    def cancel(self, owner: object) -> int:
        """Drop the owner's queued requests (their futures are cancelled) and refuse its later ones.

        The running batch is stopped (its callers get RequestCancelled) when every request in it
        belongs to a cancelled owner; one shared with other callers finishes. Returns how many queued
        requests were dropped.
        """
        with self._cond:
            self._cancelled.add(owner)
            if self._stop is not None and all(r.owner is not None and r.owner in self._cancelled for r in self._running):
                self._stop.stop(f"the calls of the running batch of model {self.model!r} were cancelled")
            dropped = [r for r in self._queue if r.owner is owner]
            if not dropped:
                return 0
            self._queue = deque(r for r in self._queue if r.owner is not owner)
            self._queued_images -= sum(len(r.batch) for r in dropped)
            self._report_depth()
            self._cond.notify()  # the runtime thread may be waiting on a head that is gone
        for request in dropped:
            request.future.cancel()
        return len(dropped)

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking work; end the thread once it is done, waiting for that at most `timeout` seconds.

        drain: queued requests still run, and a running batch runs until its calls are cancelled (an
        unregistered model's live calls finish their batches). Otherwise queued requests and the
        running batch fail with BatcherClosed at once (shutdown): a forward pass that never ends
        must not hold the process.
        """
        with self._cond:
            self._closing = True
            failed = [] if drain else list(self._queue)
            if failed:
                self._queue.clear()
                self._queued_images = 0
                self._report_depth()
            if not drain and self._stop is not None:
                self._abandoned = True
                self._stop.stop(f"model {self.model!r} shut down while the batch ran")
            self._cond.notify()
        for request in failed:
            request.future.set_exception(BatcherClosed(
                f"model {self.model!r} shut down before this request ran; retry on another server"))
        self._thread.join(timeout)

    # --- runtime thread -------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._cond:
                taken = self._next_batch()
                stop = self._stop
            if taken is None or stop is None:
                return
            try:
                self._run(taken, stop)
            except Exception:  # noqa: BLE001 - an observer bug must not stop the model's only runtime thread
                log.exception("batcher of model %r: reporting a batch failed", self.model)
            finally:
                with self._cond:
                    self._running, self._stop = [], None

    def _next_batch(self) -> list[_Request] | None:
        """Wait for work (and, when merging, up to max_queue_delay for a fuller batch); take it as the
        running batch, with a fresh RunStop. Holds the lock."""
        while True:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            if not self.merge or self._closing or self._queued_images >= self.max_batch:
                break
            remaining = self._queue[0].enqueued + self.max_queue_delay - time.perf_counter()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        taken = [self._queue.popleft()]
        total = len(taken[0].batch)
        while self.merge and self._queue and total + len(self._queue[0].batch) <= self.max_batch:
            taken.append(self._queue.popleft())
            total += len(taken[-1].batch)
        self._queued_images -= total
        self._report_depth()
        self._running, self._stop = taken, RunStop()  # set with the lock held: cancel() sees it at once
        return taken

    def _run(self, taken: list[_Request], stop: RunStop) -> None:
        started = time.perf_counter()
        taken = [r for r in taken if r.future.set_running_or_notify_cancel()]  # a Future.cancel() by its caller
        if not taken:
            return
        total = sum(len(r.batch) for r in taken)
        try:
            outputs = self.session.run(taken[0].batch if len(taken) == 1 else self._merge(taken, total), stop)
        except RunStopped:
            for r in taken:
                r.future.set_exception(BatcherClosed(f"model {self.model!r} is shutting down: its batch was stopped "
                                                     "while it ran; retry on another server") if self._abandoned else RequestCancelled(
                    f"the call using model {self.model!r} was cancelled while its batch ran"))
            return
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the failure
            self._fail(taken, total, exc)
            return
        run_seconds = time.perf_counter() - started
        offset = 0
        for r in taken:
            n = len(r.batch)
            r.future.set_result(BatchResult([o[offset : offset + n] for o in outputs], started - r.enqueued, run_seconds, total))
            offset += n
        if self._observer is not None:
            self._observer.observe_batch(self.model, total, [started - r.enqueued for r in taken], run_seconds)

    def _merge(self, taken: list[_Request], total: int) -> np.ndarray:
        """The requests' rows in one input batch, zero-padded to the size Session.run would pad `total` to."""
        size = self.session.padded_size(total)
        if self._merged is None:
            first = taken[0].batch
            self._merged = np.empty((self.max_batch, *first.shape[1:]), dtype=first.dtype)
        merged = self._merged[:size]
        offset = 0
        for r in taken:
            merged[offset : offset + len(r.batch)] = r.batch
            offset += len(r.batch)
        merged[total:] = 0  # padding rows must not carry an earlier batch's images
        return merged

    def _fail(self, taken: list[_Request], total: int, exc: Exception) -> None:
        if len(taken) == 1:
            taken[0].future.set_exception(exc)
            return
        # One exception object per caller: each caller's thread re-raises and chains its own.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        for r in taken:
            error = ModelOutputError(f"the model failed on a runtime batch shared by {len(taken)} requests "
                                     f"({total} images): {first}")
            error.__cause__ = exc
            r.future.set_exception(error)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.set_queue_depth(self.model, self._queued_images)


@dataclass
class OwnerStats:
    """Runtime work of one owner's requests: the exact inference time of a call."""

    requests: int = 0
    images: int = 0
    queue_seconds: float = 0.0
    run_seconds: float = 0.0


class BatchedSession:
    """A `runtime.Session` look-alike whose runs go through a shared Batcher.

    `padded_size(n)` is n: the caller hands over only real rows and the batcher pads merged batches.
    A session bound to an owner (`bind`) tags its requests so that `cancel(owner)` can drop them,
    and sums their queue and run time in `stats`.
    """

    def __init__(self, batcher: Batcher, owner: object | None = None) -> None:
        self.batcher = batcher
        self.owner = owner
        session = batcher.session
        self.input_name = session.input_name
        self.output_names = session.output_names
        self.provider = session.provider
        self.threads = session.threads
        self.fixed_batch = session.fixed_batch
        self.max_batch = batcher.max_batch
        self.stats = OwnerStats()
        self._stats_lock = threading.Lock()

    def padded_size(self, n: int) -> int:
        return n

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for a batch of 1..max_batch model inputs, cut to its rows."""
        future = self.batcher.submit(batch, self.owner)
        try:
            result = future.result()
        except CancelledError:
            raise RequestCancelled(f"the call using model {self.batcher.model!r} was cancelled") from None
        with self._stats_lock:  # a scorer's runtime thread and an embed() call may share a bound session
            self.stats.requests += 1
            self.stats.images += len(batch)
            self.stats.queue_seconds += result.queue_seconds
            self.stats.run_seconds += result.run_seconds
        return result.outputs

    def bind(self, owner: object) -> BatchedSession:
        """A session on the same batcher whose requests belong to `owner` (e.g. one gRPC call)."""
        return BatchedSession(self.batcher, owner)

    def cancel(self, owner: object) -> int:
        return self.batcher.cancel(owner)

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        self.batcher.close(drain=drain, timeout=timeout)


def served(
    model: PreparedModel, name: str, *, max_queue_delay: float = DEFAULT_MAX_QUEUE_DELAY,
    max_queue_images: int | None = None, observer: BatchObserver | None = None,
) -> PreparedModel:
    """The prepared model with its session behind a new Batcher (merging unless batch-dependent)."""
    if isinstance(model.session, BatchedSession):
        raise ValueError(f"model {name!r} is already batched")
    batcher = Batcher(model.session, model=name, merge=not model.batch.dependent, max_queue_delay=max_queue_delay,
                      max_queue_images=max_queue_images, observer=observer)
    return with_session(model, BatchedSession(batcher))


def bound(model: PreparedModel, owner: object) -> PreparedModel:
    """The served model for one owner's requests (cancel with `model.session.cancel(owner)`)."""
    if not isinstance(model.session, BatchedSession):
        raise ValueError("bound() needs a model returned by served()")
    return with_session(model, model.session.bind(owner))


def with_session(model: PreparedModel, session: Session | BatchedSession) -> PreparedModel:
    """The model with another session, sharing its derived cache (instrumented white-box sessions)."""
    copy = dataclasses.replace(model, session=session)  # type: ignore[arg-type]
    copy.derived = model.derived  # replace() gives a fresh cache (init=False); this is the same model
    return copy
