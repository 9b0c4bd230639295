"""Prometheus metrics of one faceaudit server, and their HTTP /metrics endpoint.

Every metric is built against the `CollectorRegistry` of one `Telemetry` object, never the global
default registry, so several servers (and tests) in one process do not collide. Names follow the
Prometheus conventions: `faceaudit_` prefix, base units (`_seconds`, `_bytes`), `_total` on
counters, histograms for latencies. Labels are bounded: `rpc` (the service's RPC names), `method`
(the explanation-method registry; "" where an RPC has none), `code` (a gRPC status code name),
`phase` (the three below) and `model` (the registered model name: bounded by the model registry,
and a model's series are removed when it is unregistered).

This module only records what the server and the batcher tell it; it may touch prometheus_client
and nothing else of the process (no grpc import, no global registry).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

# Where a request's caller-side time goes: making perturbed images and converting them to model
# input; waiting for the runtime; consuming the scores (maps, curves, summaries).
PHASES = ("perturbation", "inference", "aggregation")

# Explanation work spans tens of milliseconds (a gradient map) to minutes (an audit).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Queueing before a runtime batch should stay within a few max_queue_delays.
QUEUE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Runtime batches are padded to powers of two (engine.runtime.bucket), up to RuntimeOptions' 4096.
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))


class MetricsServer:
    """A running /metrics HTTP endpoint; `close()` stops it and frees its port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()  # ends serve_forever; returns once the serving thread has left it
        self._server.server_close()
        self._thread.join()


class Telemetry:
    """The server's metrics; small typed methods for the code that observes them."""

    def __init__(self, registry: CollectorRegistry | None = None, *, rpcs: Iterable[str] = ()) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._requests = Counter("faceaudit_requests", "Finished RPCs by RPC, explanation method and gRPC status code.",
                                 ["rpc", "method", "code"], registry=r)
        self._duration = Histogram("faceaudit_request_duration_seconds", "Wall time of finished RPCs.",
                                   ["rpc", "method"], buckets=DURATION_BUCKETS, registry=r)
        self._phase = Histogram("faceaudit_phase_seconds",
                                "Per request, time in each phase: perturbation (generating and preprocessing "
                                "perturbed images) and aggregation (consuming the scores) on the request's thread; "
                                "inference: its images' queue and runtime time in the batcher, which overlaps the "
                                "next chunk's perturbation, so the phases can sum to more than the request's wall "
                                "time.", ["phase"], buckets=DURATION_BUCKETS, registry=r)
        self._forward = Counter("faceaudit_forward_passes", "Images run through a model (padding rows not counted).",
                                ["model"], registry=r)
        self._batch = Histogram("faceaudit_batch_size", "Images per runtime batch, before padding.",
                                ["model"], buckets=BATCH_BUCKETS, registry=r)
        self._batch_seconds = Histogram("faceaudit_batch_run_seconds", "Runtime (onnxruntime) time per batch.",
                                        ["model"], buckets=QUEUE_BUCKETS + (5.0, 10.0, 30.0), registry=r)
        self._queue_depth = Gauge("faceaudit_queue_depth", "Images waiting in the model's batcher queue.",
                                  ["model"], registry=r)
        self._queue_seconds = Histogram("faceaudit_queue_seconds", "Time a request waited in the batcher queue.",
                                        ["model"], buckets=QUEUE_BUCKETS, registry=r)
        self._models = Gauge("faceaudit_models_loaded", "Models registered and ready.", registry=r)
        self._model_bytes = Gauge("faceaudit_model_size_bytes", "Size of a registered model's ONNX bytes.",
                                  ["model"], registry=r)
        self._in_flight = Gauge("faceaudit_jobs_in_flight", "RPCs being served now.", ["rpc"], registry=r)
        self._loaded: set[str] = set()
        self._lock = threading.Lock()
        for phase in PHASES:  # pre-initialised: a phase never observed still shows as 0
            self._phase.labels(phase)
        for rpc in rpcs:
            self._in_flight.labels(rpc)

    # --- requests -------------------------------------------------------------------------------
    def observe_request(self, rpc: str, method: str, code: str, seconds: float) -> None:
        """A finished RPC: `method` is the explanation method ("" if none), `code` e.g. "OK"."""
        self._requests.labels(rpc, method, code).inc()
        self._duration.labels(rpc, method).observe(seconds)

    @contextmanager
    def in_flight(self, rpc: str) -> Iterator[None]:
        """Counts the RPC in faceaudit_jobs_in_flight while the block runs."""
        gauge = self._in_flight.labels(rpc)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def observe_phases(self, seconds: dict[str, float]) -> None:
        """One request's time per phase (keys from PHASES)."""
        unknown = set(seconds) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
        for phase, value in seconds.items():
            self._phase.labels(phase).observe(value)

    # --- models and their batchers (engine.batcher.BatchObserver) -------------------------------
    def observe_batch(self, model: str, images: int, queue_seconds: Sequence[float], run_seconds: float) -> None:
        """One runtime batch of `images` real images, merged from requests that waited `queue_seconds`."""
        self._forward.labels(model).inc(images)
        self._batch.labels(model).observe(images)
        self._batch_seconds.labels(model).observe(run_seconds)
        queue = self._queue_seconds.labels(model)
        for waited in queue_seconds:
            queue.observe(waited)

    def set_queue_depth(self, model: str, images: int) -> None:
        self._queue_depth.labels(model).set(images)

    def count_forward_passes(self, model: str, images: int) -> None:
        """Forward passes that bypass the batcher (white-box methods run instrumented sessions; some games
        run sessions of their own: metrics.off_session_passes)."""
        self._forward.labels(model).inc(images)

    def model_loaded(self, model: str, size_bytes: int) -> None:
        with self._lock:
            self._loaded.add(model)
            self._models.set(len(self._loaded))
        self._model_bytes.labels(model).set(size_bytes)
        for per_model in (self._forward, self._batch, self._batch_seconds, self._queue_depth, self._queue_seconds):
            per_model.labels(model)  # pre-initialised: a new model shows zero series at once

    def model_unloaded(self, model: str) -> None:
        """Forget a model: its series go, so names of unregistered models do not pile up."""
        with self._lock:
            self._loaded.discard(model)
            self._models.set(len(self._loaded))
        for per_model in (self._forward, self._batch, self._batch_seconds, self._queue_depth, self._queue_seconds,
                          self._model_bytes):
            try:
                per_model.remove(model)
            except KeyError:
                pass  # never observed

    # --- exposition -----------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def serve_http(self, port: int, addr: str = "0.0.0.0") -> MetricsServer:
        """Serve /metrics on addr:port (port 0 picks a free one: read `.port`) on a daemon thread."""
        server, thread = start_http_server(port, addr, registry=self.registry)
        return MetricsServer(server, thread)
