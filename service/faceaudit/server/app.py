"""Build, start and stop a faceaudit gRPC server.

Execution model: a synchronous `grpc.server` with a thread pool. onnxruntime releases the GIL
while it runs, so request threads block in the runtime (or in the model's batcher, which merges
their forward passes) without stalling each other, and no event loop exists that could be
blocked. grpc.aio would need every method call pushed through run_in_executor and its progress
callbacks marshalled back to the loop, for no gain: the methods are synchronous, CPU-bound code.
The pool is sized to the concurrent-RPC limit, so an admitted call always has a thread.

Lifecycle: health reports SERVING once every service is registered and the port is bound, and
NOT_SERVING as soon as shutdown begins. For `drain_notice_s` the server still takes calls (so
that load balancers polling health can move traffic away), then it refuses new ones and gives
running calls `grace_s` seconds to finish before cancelling them.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from faceaudit.engine.batcher import served
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import FaceAuditError, InvalidRequest
from faceaudit.models import DEFAULT_MAX_MODEL_BYTES
from faceaudit.server.audit_service import AuditServicer
from faceaudit.server.auth import BearerTokenInterceptor
from faceaudit.server.evaluate_service import EvaluateServicer
from faceaudit.server.explain_service import ExplainServicer
from faceaudit.server.model_store import DEFAULT_MAX_MODELS, NAME, ModelStore, is_model_name
from faceaudit.server.models_service import ModelsServicer
from faceaudit.server.telemetry import MetricsServer, Telemetry
from faceaudit.server.upload import DEFAULT_MAX_CONCURRENT_UPLOADS, DEFAULT_UPLOAD_IDLE_S, DEFAULT_UPLOAD_TOTAL_S
from faceaudit.server.work_budget import DEFAULT_MAX_REQUEST_PASSES
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc

log = logging.getLogger("faceaudit.server")

MiB = 1 << 20
# One request carries a few images (and targets); model uploads are chunked, so this bounds a
# chunk, not a model. Responses carry maps (float32 H×W each); many large maps belong in
# ExplainStream, which sends one map per message.
DEFAULT_MAX_RECEIVE_BYTES = 64 * MiB
DEFAULT_MAX_SEND_BYTES = 64 * MiB
DEFAULT_MAX_CONCURRENT_RPCS = 64

SERVICES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())


@dataclass(frozen=True)
class ServerConfig:
    """Everything `faceaudit serve` can set (see faceaudit.cli.serve for flags and env vars)."""

    host: str = "[::]"
    port: int = 50051  # 0: any free port (read FaceAuditServer.port)
    metrics_port: int | None = None  # None: no /metrics endpoint; 0: any free port
    model_repository: Path | None = None
    # Repository models registered at start, before health says SERVING ("*": every NAME.onnx whose NAME
    # is a valid model name; other files are skipped with a warning): each replica behind a load
    # balancer then holds them, whichever replica a client's channel reaches.
    preload: tuple[str, ...] = ()
    dataset_repository: Path | None = None  # folders (manifest.csv + images) Audit names
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    max_queue_delay_ms: float = 2.0
    max_queue_images: int | None = None  # None: 16 full batches of the model
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    max_models: int = DEFAULT_MAX_MODELS
    max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: int = DEFAULT_MAX_SEND_BYTES
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS  # beyond it: RESOURCE_EXHAUSTED, not a wait
    upload_idle_s: float = DEFAULT_UPLOAD_IDLE_S  # the longest wait for an upload's next chunk
    upload_total_s: float = DEFAULT_UPLOAD_TOTAL_S  # the longest a whole upload may take
    max_request_passes: int | None = DEFAULT_MAX_REQUEST_PASSES  # the maps of one Explain/Evaluate request; None: no limit
    max_call_s: float | None = None  # the longest a call may compute (before the client's deadline); None: no limit
    token: str | None = None  # bearer token; None: no authentication
    tls_cert: bytes | None = None  # PEM certificate chain and private key: both or neither
    tls_key: bytes | None = None
    grace_s: float = 30.0  # running calls may finish within this after shutdown begins
    drain_notice_s: float = 0.0  # NOT_SERVING this long before new calls are refused (load balancers notice)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidRequest("port", f"{self.port} is outside 0..65535")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InvalidRequest("metrics_port", f"{self.metrics_port} is outside 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidRequest("tls_cert", "TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if self.preload and self.model_repository is None:
            raise InvalidRequest("preload", "preloading needs a model repository (--model-repository DIR)")
        if "*" in self.preload and len(self.preload) > 1:
            raise InvalidRequest("preload", "'*' (every repository model) goes alone, not among names")
        for name in ("model_repository", "dataset_repository"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise InvalidRequest(name, f"{folder} is not a folder")
        if not 0 <= self.max_queue_delay_ms <= 1000:
            raise InvalidRequest("max_queue_delay_ms", f"{self.max_queue_delay_ms} is outside 0..1000 ms")
        if self.max_queue_images is not None and self.max_queue_images < self.runtime.max_batch:
            raise InvalidRequest("max_queue_images", f"{self.max_queue_images} is below --max-batch {self.runtime.max_batch}")
        for name in ("max_model_bytes", "max_models", "max_receive_bytes", "max_send_bytes",
                     "max_concurrent_rpcs", "max_concurrent_uploads", "max_request_passes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidRequest(name, f"{getattr(self, name)} must be positive")
        if self.max_concurrent_uploads >= self.max_concurrent_rpcs:
            raise InvalidRequest("max_concurrent_uploads", f"{self.max_concurrent_uploads} must be below "
                                 f"--max-concurrent-rpcs {self.max_concurrent_rpcs}: uploads may not take every call")
        for name in ("upload_idle_s", "upload_total_s", "max_call_s"):  # Python's waits take at most TIMEOUT_MAX
            if getattr(self, name) is not None and not 0 < getattr(self, name) <= threading.TIMEOUT_MAX:
                raise InvalidRequest(name, f"{getattr(self, name)} must be a positive number of seconds, at most "
                                           f"{threading.TIMEOUT_MAX:.0f}")
        for name in ("grace_s", "drain_notice_s"):
            if getattr(self, name) < 0:
                raise InvalidRequest(name, f"{getattr(self, name)} must not be negative")


class FaceAuditServer:
    """One server: its models, telemetry, grpc server, health and optional /metrics endpoint."""

    def __init__(self, config: ServerConfig = ServerConfig(), telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry(rpcs=_rpc_names())
        self.store = ModelStore(repository=config.model_repository, runtime=config.runtime,
                                max_model_bytes=config.max_model_bytes, max_models=config.max_models,
                                telemetry=self.telemetry, wrap=self._batched)
        self.health = health.HealthServicer()
        interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_concurrent_rpcs, thread_name_prefix="faceaudit-rpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,  # beyond it: RESOURCE_EXHAUSTED at once
            options=[("grpc.max_receive_message_length", config.max_receive_bytes),
                     ("grpc.max_send_message_length", config.max_send_bytes)],
        )
        rpc.add_ModelsServicer_to_server(ModelsServicer(
            self.store, self.telemetry, idle_s=config.upload_idle_s, total_s=config.upload_total_s,
            max_uploads=config.max_concurrent_uploads), self._server)
        rpc.add_ExplainServicer_to_server(ExplainServicer(
            self.store, self.telemetry, config.max_call_s, config.max_request_passes), self._server)
        rpc.add_EvaluateServicer_to_server(EvaluateServicer(
            self.store, self.telemetry, config.max_call_s, config.max_request_passes), self._server)
        rpc.add_AuditServicer_to_server(AuditServicer(
            self.store, self.telemetry, config.dataset_repository, config.max_call_s), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        address = f"{config.host}:{config.port}"
        try:
            if config.tls_cert is not None:
                credentials = grpc.ssl_server_credentials([(config.tls_key, config.tls_cert)])
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises when the address is taken or invalid
            raise InvalidRequest("port", f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise InvalidRequest("port", f"cannot listen on {address}")
        self._metrics: MetricsServer | None = None
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _batched(self, name: str, model: PreparedModel) -> PreparedModel:
        """Every call on the model shares one batcher: concurrent requests' forward passes merge."""
        return served(model, name, max_queue_delay=self.config.max_queue_delay_ms / 1000.0,
                      max_queue_images=self.config.max_queue_images, observer=self.telemetry)

    @property
    def metrics_port(self) -> int | None:
        return self._metrics.port if self._metrics is not None else None

    def start(self) -> FaceAuditServer:
        if self.config.metrics_port is not None:
            # /metrics needs no token: it listens where the gRPC port does, not on every interface
            host = self.config.host.strip("[]")
            self._metrics = self.telemetry.serve_http(self.config.metrics_port, "::" if host == "::" else host)
        self._server.start()
        try:
            self._preload()
        except Exception:
            self.stop(0)
            raise
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("faceaudit serving on port %d%s", self.port, " (TLS)" if self.config.tls_cert else "")
        return self

    def _preload(self) -> None:
        """Register the configured repository models (NOT_SERVING meanwhile); the first that fails stops the start."""
        names = self.config.preload
        if names == ("*",):
            names = tuple(sorted(path.stem for path in self.store.repository.glob("*.onnx")))  # type: ignore[union-attr]
            unnamed = [n for n in names if not is_model_name(n)]
            if unnamed:  # a file no client could name ("identity v2.onnx") must not stop the whole start
                log.warning("--preload '*': skipped %s: not valid model names (%s)", ", ".join(f"{n}.onnx" for n in unnamed),
                            NAME.pattern)
                names = tuple(n for n in names if n not in unnamed)
        for name in names:
            try:
                self.store.register_from_repository(name, {})
            except FaceAuditError as exc:
                raise InvalidRequest("preload", f"{name}: {exc}") from exc
            log.info("preloaded model %s", name)

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls after the drain notice, let running ones finish within the grace."""
        self.health.enter_graceful_shutdown()  # every service NOT_SERVING; no later set() changes it
        if grace_s != 0:
            time.sleep(self.config.drain_notice_s)
        self._server.stop(self.config.grace_s if grace_s is None else grace_s).wait()
        self.store.close()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def wait(self) -> None:
        self._server.wait_for_termination()

    def _set_health(self, status: int) -> None:
        for service in ("", *SERVICES):
            self.health.set(service, status)


def _rpc_names() -> list[str]:
    return sorted({m.name for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods})
