"""What every RPC handler shares: error -> status, telemetry, cancellation, streamed progress.

Handlers are plain functions `(request, call) -> response` (or a generator of responses). The
decorators here turn faceaudit errors into the status codes of convert.STATUS, turn anything else
into INTERNAL (logged, the server keeps serving), and record each finished RPC in the telemetry.
`Call.check` is the progress callback handed to methods and games: it raises CallEnded once the
client has cancelled, its deadline has passed or the server's own limit per call (--max-call-s)
has, so the work stops after the current batch. A forward pass already running stops too: when
the call ends (grpc's callback) or its limit passes (a timer), its batcher requests are dropped or
stopped and its own RunStop, which every other session run of the call reads
(runtime.stopping_with), ends the runs of games' and white-box sessions. Every status message is cut to
MAX_STATUS_MESSAGE_BYTES: grpc carries it in a trailer, and clients refuse large ones.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import grpc

from faceaudit.engine.batcher import BatchedSession, BatcherClosed, RequestCancelled, bound
from faceaudit.engine.phases import PhaseClock, measure_phases
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RunStop, RunStopped, stopping_with
from faceaudit.errors import FaceAuditError
from faceaudit.server.convert import CallEnded, NotFound, status_of
from faceaudit.server.model_store import Entry
from faceaudit.server.telemetry import Telemetry

log = logging.getLogger("faceaudit.server")

PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress messages a second per stream; the last always goes
# grpc-message is percent-encoded (up to 3 characters a byte) and clients refuse trailers past 8 KiB.
MAX_STATUS_MESSAGE_BYTES = 2048


class Call:
    """One RPC being served: its context, the explanation method it runs (for telemetry labels)."""

    def __init__(self, context: grpc.ServicerContext, max_call_s: float | None = None) -> None:
        self.context = context
        self.method = ""
        self.sessions: list[BatchedSession] = []  # this call's batcher sessions, for its inference time
        self.entries: list[Entry] = []  # the models it runs on, to tell an unregistered one from a shutdown
        self.clock = PhaseClock()  # the scorers' perturbation / aggregation time in the thread doing the work
        self.max_call_s = max_call_s
        self._ends_at = None if max_call_s is None else time.monotonic() + max_call_s
        self.stop = RunStop()  # ends the call's runs outside the batcher (games' and white-box sessions)
        self._lock = threading.Lock()
        self._cancels: list[Callable[[], object]] = []  # what stops the call's batcher work, run once it ends
        self._stopped = False  # the call ended or ran past its limit: its work is being stopped
        self._expired = False  # the --max-call-s timer fired (it may wake a hair before _ends_at)
        self._watching = False
        self._timer: threading.Timer | None = None

    def active(self) -> bool:
        remaining = self.context.time_remaining()
        return self.context.is_active() and (remaining is None or remaining > 0) and not self.past_limit()

    def past_limit(self) -> bool:
        """Whether the server's own limit per call (--max-call-s) has passed."""
        return self._expired or self._ends_at is not None and time.monotonic() >= self._ends_at

    @property
    def stopped(self) -> bool:
        """Whether the call's work is being stopped (it ended, or passed --max-call-s)."""
        return self._stopped

    def running(self) -> AbstractContextManager[None]:
        """The block doing the call's work: its session runs end when the call's work is stopped."""
        return stopping_with(self.stop)

    def bind(self, entry: Entry) -> PreparedModel:
        """The entry's model, its batcher requests belonging to this call: dropped from the queue, or their
        running batch stopped, when the call ends or passes its limit."""
        self.entries.append(entry)
        self._watch()
        model = entry.model
        if not isinstance(model.session, BatchedSession):
            return model
        served = bound(model, self)
        self.sessions.append(served.session)
        self._on_stop(lambda: model.session.cancel(self))
        return served

    def check(self, done: int = 0, total: int = 0, phase: str = "") -> None:
        """A Progress callback that only stops the work of an ended call."""
        if not self.active():
            raise CallEnded

    def close(self) -> None:
        """The RPC is over: no timer outlives it."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _watch(self) -> None:
        """Once per call: stop its work when the RPC ends, and when --max-call-s passes."""
        with self._lock:
            if self._watching:
                return
            self._watching = True
        if not self.context.add_callback(self._stop_work):  # the RPC has already ended
            self._stop_work()
        if self._ends_at is not None:
            timer = threading.Timer(max(0.0, self._ends_at - time.monotonic()), self._expire)
            timer.daemon = True
            with self._lock:
                self._timer = timer
            timer.start()

    def _expire(self) -> None:
        self._expired = True
        self._stop_work()

    def _on_stop(self, cancel: Callable[[], object]) -> None:
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._cancels.append(cancel)
        if stopped:
            cancel()

    def _stop_work(self) -> None:
        with self._lock:
            self._stopped = True
            cancels, self._cancels = self._cancels, []
        reason = (f"the call ran past this server's limit of {self.max_call_s:g} s per call" if self._expired
                  else "the call ended")
        self.stop.stop(reason)
        for cancel in cancels:
            cancel()


def _ended_status(call: Call) -> grpc.StatusCode:
    remaining = call.context.time_remaining()
    expired = remaining is not None and remaining <= 0 or call.past_limit()
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED


class Servicer:
    """Base of the servicers: the telemetry the decorators below record into, the limit per call."""

    def __init__(self, telemetry: Telemetry, max_call_s: float | None = None) -> None:
        self.telemetry = telemetry
        self.max_call_s = max_call_s  # None: only the client's deadline bounds a call


def unary(rpc: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates `handler(servicer, request, call) -> response` as a grpc unary handler."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def serve(servicer: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
            call, started = Call(context, servicer.max_call_s), time.perf_counter()
            with servicer.telemetry.in_flight(rpc):
                try:
                    with measure_phases(call.clock), call.running():
                        response = handler(servicer, request, call)
                except BaseException as error:  # noqa: BLE001 - every failure becomes a status
                    _fail(servicer.telemetry, rpc, call, started, error)
            _finish(servicer.telemetry, rpc, call, started, grpc.StatusCode.OK)
            return response

        return serve

    return decorate


def streaming(rpc: str) -> Callable[[Callable[..., Iterator[Any]]], Callable[..., Iterator[Any]]]:
    """Decorates a generator `handler(servicer, request, call)` as a grpc response-streaming handler."""

    def decorate(handler: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        @functools.wraps(handler)
        def serve(servicer: Servicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call, started = Call(context, servicer.max_call_s), time.perf_counter()
            with servicer.telemetry.in_flight(rpc):
                try:
                    yield from handler(servicer, request, call)
                except GeneratorExit:  # the client went away: grpc closed the stream
                    _finish(servicer.telemetry, rpc, call, started, _ended_status(call))
                    raise
                except BaseException as error:  # noqa: BLE001
                    _fail(servicer.telemetry, rpc, call, started, error)
            _finish(servicer.telemetry, rpc, call, started, grpc.StatusCode.OK)

        return serve

    return decorate


def _finish(telemetry: Telemetry, rpc: str, call: Call, started: float, code: grpc.StatusCode) -> None:
    call.close()
    telemetry.observe_request(rpc, call.method, code.name, time.perf_counter() - started)
    phases = call.clock.seconds()
    if call.sessions:  # queue + runtime time of the call's batched forward passes (exact, from the batcher)
        phases["inference"] = sum(s.stats.queue_seconds + s.stats.run_seconds for s in call.sessions)
    if any(phases.values()):
        telemetry.observe_phases(phases)


def _fail(telemetry: Telemetry, rpc: str, call: Call, started: float, error: BaseException) -> None:
    # An ended call's batches and runs are stopped; whatever the work then raised is that ending's doing.
    if isinstance(error, (CallEnded, RequestCancelled, RunStopped)) or call.stopped:
        code, message = _ended_status(call), "the call ended before the work finished"
        if call.past_limit():
            message = f"the call ran past this server's limit of {call.max_call_s:g} s per call (--max-call-s)"
    elif isinstance(error, FaceAuditError):
        gone = [e.name for e in call.entries if e.unregistered]
        if isinstance(error, BatcherClosed) and gone:  # not a shutdown: a retry would get NOT_FOUND, so say so now
            error = NotFound(f"model: {gone[0]} was unregistered while the call ran")
        code, message = status_of(error), str(error)
    else:
        log.exception("%s failed", rpc)
        code, message = grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the server log"
    _finish(telemetry, rpc, call, started, code)
    call.context.abort(code, clipped(message))  # raises: grpc ends the RPC with this status


def clipped(message: str) -> str:
    """The message cut to MAX_STATUS_MESSAGE_BYTES of UTF-8, "…" marking the cut."""
    encoded = message.encode()
    if len(encoded) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    return encoded[:MAX_STATUS_MESSAGE_BYTES - len("…".encode())].decode(errors="ignore") + "…"


def run_streaming(work: Callable[[Callable[[Any], None]], None], call: Call) -> Iterator[Any]:
    """Run `work(emit)` on a thread of its own and yield what it emits as it emits it.

    Methods report progress through callbacks, from deep inside their loops; a grpc stream is a
    generator. The worker hands events over a queue; an error in the worker is re-raised here.
    When the client goes away the worker's next `call.check` raises, and it is waited for, so the
    RPC's thread is not released before its work has stopped.
    """
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def emit(event: Any) -> None:
        call.check()
        events.put(("event", event))

    def target() -> None:
        try:
            with measure_phases(call.clock), call.running():
                work(emit)
            events.put(("done", None))
        except BaseException as error:  # noqa: BLE001 - handed to the RPC's thread
            events.put(("error", error))

    worker = threading.Thread(target=target, name="faceaudit-stream", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        worker.join()


class Throttle:
    """Passes a progress event on at most every PROGRESS_INTERVAL_S, and always the final one."""

    def __init__(self, send: Callable[[int, int, str], None]) -> None:
        self._send = send
        self._last = 0.0

    def __call__(self, done: int, total: int, phase: str) -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self._send(done, total, phase)
