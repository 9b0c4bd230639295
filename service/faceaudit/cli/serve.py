"""`faceaudit serve`: run the gRPC service until SIGINT/SIGTERM, then drain and stop.

Every flag falls back to an environment variable (flag > environment > default), so containers
are configured without a command line:

    --host                FACEAUDIT_HOST                 [::]
    --port                FACEAUDIT_PORT                 50051
    --metrics-port        FACEAUDIT_METRICS_PORT         none (no /metrics endpoint)
    --model-repository    FACEAUDIT_MODEL_REPOSITORY     none (uploads only)
    --preload             FACEAUDIT_PRELOAD              none; NAME,NAME or * (every repository model with a valid name)
    --dataset-repository  FACEAUDIT_DATASET_REPOSITORY   none (no Audit)
    --max-batch           FACEAUDIT_MAX_BATCH            64
    --max-queue-delay-ms  FACEAUDIT_MAX_QUEUE_DELAY_MS   2
    --max-queue-images    FACEAUDIT_MAX_QUEUE_IMAGES     16 × the model's max batch
    --max-message-mib     FACEAUDIT_MAX_MESSAGE_MIB      64 (receive and send)
    --max-model-mib       FACEAUDIT_MAX_MODEL_MIB        1024
    --max-concurrent-rpcs FACEAUDIT_MAX_CONCURRENT_RPCS  64
    --max-concurrent-uploads FACEAUDIT_MAX_CONCURRENT_UPLOADS 4 (model uploads among those calls)
    --upload-idle-s       FACEAUDIT_UPLOAD_IDLE_S        30 (the longest wait for an upload's next chunk)
    --upload-total-s      FACEAUDIT_UPLOAD_TOTAL_S       600 (one whole upload)
    --max-request-passes  FACEAUDIT_MAX_REQUEST_PASSES   5000000 (the maps of one request; 0: no limit)
    --max-call-s          FACEAUDIT_MAX_CALL_S           none (a call's computing time; 0: none)
    --token-file          FACEAUDIT_TOKEN_FILE           none; or the token itself in FACEAUDIT_TOKEN
    --tls-cert/--tls-key  FACEAUDIT_TLS_CERT/_KEY        none (plaintext)
    --grace-s             FACEAUDIT_GRACE_S              30
    --drain-notice-s      FACEAUDIT_DRAIN_NOTICE_S       2
    --provider, --threads FACEAUDIT_PROVIDER, _THREADS   auto, the CPUs available
    --probe-s             FACEAUDIT_PROBE_S              60 (a model's test runs while it is registered)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest
from faceaudit.server.app import FaceAuditServer, ServerConfig
from faceaudit.server.auth import read_token
from faceaudit.server.upload import DEFAULT_MAX_CONCURRENT_UPLOADS, DEFAULT_UPLOAD_IDLE_S, DEFAULT_UPLOAD_TOTAL_S
from faceaudit.server.work_budget import DEFAULT_MAX_REQUEST_PASSES

MiB = 1 << 20


def _env(name: str, convert: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get(f"FACEAUDIT_{name}")
    if raw is None or raw == "":
        return None
    try:
        return convert(raw)
    except ValueError as exc:
        raise InvalidRequest(f"FACEAUDIT_{name}", f"{raw!r} is not a valid {convert.__name__}") from exc


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default [::], every interface)")
    parser.add_argument("--port", type=int, help="gRPC port (default 50051; 0 picks a free one)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: off)")
    parser.add_argument("--model-repository", help="folder of NAME.onnx (+ NAME.spec.yaml) models clients register by name")
    parser.add_argument("--preload", metavar="NAME,NAME|*",
                        help="register these repository models at start, before health says SERVING (*: all; files whose "
                             "name is no valid model name, e.g. with a space, are skipped with a warning)")
    parser.add_argument("--dataset-repository", help="folder of dataset folders (manifest.csv + images) Audit runs on")
    parser.add_argument("--max-batch", type=int, help="images per runtime batch (default 64)")
    parser.add_argument("--max-queue-delay-ms", type=float, help="how long a partial batch waits for more (default 2)")
    parser.add_argument("--max-queue-images", type=int, help="queued images per model before RESOURCE_EXHAUSTED")
    parser.add_argument("--max-message-mib", type=float, help="largest gRPC message received or sent (default 64)")
    parser.add_argument("--max-model-mib", type=float, help="largest model accepted (default 1024)")
    parser.add_argument("--max-concurrent-rpcs", type=int, help="calls served at once; more get RESOURCE_EXHAUSTED (default 64)")
    parser.add_argument("--max-concurrent-uploads", type=int,
                        help="model uploads received at once; more get RESOURCE_EXHAUSTED (default 4)")
    parser.add_argument("--upload-idle-s", type=float, help="an upload waiting longer for its next chunk fails (default 30)")
    parser.add_argument("--upload-total-s", type=float, help="an upload taking longer fails (default 600)")
    parser.add_argument("--max-request-passes", type=int,
                        help="forward passes the maps of one Explain/Evaluate request may take (default 5000000; 0: no limit)")
    parser.add_argument("--max-call-s", type=float,
                        help="seconds an Explain/Evaluate/Audit call may compute, whatever the client's deadline "
                             "(default and 0: no limit)")
    parser.add_argument("--token-file", help="require 'authorization: Bearer <token>' with the token in this file")
    parser.add_argument("--tls-cert", help="PEM certificate chain (with --tls-key): serve TLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--grace-s", type=float, help="on shutdown, seconds running calls may take to finish (default 30)")
    parser.add_argument("--drain-notice-s", type=float, help="on shutdown, seconds of NOT_SERVING before calls are refused (default 2)")
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads per model")
    parser.add_argument("--probe-s", type=float,
                        help="seconds a model's test runs may take while it is registered; slower models are "
                             "refused (default 60)")


def _pick(args: argparse.Namespace, name: str, convert: Callable[[str], Any], default: Any) -> Any:
    value = getattr(args, name)
    if value is None:
        value = _env(name.upper(), convert)
    return default if value is None else value


def _read(path: str | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {path}: {exc.strerror or exc}") from exc


def config_from(args: argparse.Namespace) -> ServerConfig:
    repository = _pick(args, "model_repository", str, None)
    datasets = _pick(args, "dataset_repository", str, None)
    preload = tuple(name.strip() for name in _pick(args, "preload", str, "").split(",") if name.strip())
    queue = _pick(args, "max_queue_images", int, None)
    message = int(_pick(args, "max_message_mib", float, 64.0) * MiB)
    runtime = RuntimeOptions(provider=_pick(args, "provider", str, "auto"), threads=_pick(args, "threads", int, None),
                             probe_seconds=_pick(args, "probe_s", float, 60.0),
                             max_batch=_pick(args, "max_batch", int, 64))
    return ServerConfig(
        host=_pick(args, "host", str, "[::]"), port=_pick(args, "port", int, 50051),
        metrics_port=_pick(args, "metrics_port", int, None),
        model_repository=Path(repository) if repository else None, preload=preload,
        dataset_repository=Path(datasets) if datasets else None, runtime=runtime,
        max_queue_delay_ms=_pick(args, "max_queue_delay_ms", float, 2.0), max_queue_images=queue,
        max_model_bytes=int(_pick(args, "max_model_mib", float, 1024.0) * MiB),
        max_receive_bytes=message, max_send_bytes=message,
        max_concurrent_rpcs=_pick(args, "max_concurrent_rpcs", int, 64),
        max_concurrent_uploads=_pick(args, "max_concurrent_uploads", int, DEFAULT_MAX_CONCURRENT_UPLOADS),
        upload_idle_s=_pick(args, "upload_idle_s", float, DEFAULT_UPLOAD_IDLE_S),
        upload_total_s=_pick(args, "upload_total_s", float, DEFAULT_UPLOAD_TOTAL_S),
        max_request_passes=_pick(args, "max_request_passes", int, DEFAULT_MAX_REQUEST_PASSES) or None,
        max_call_s=_pick(args, "max_call_s", float, 0.0) or None,
        token=read_token(_pick(args, "token_file", str, None)),
        tls_cert=_read(_pick(args, "tls_cert", str, None), "tls_cert"),
        tls_key=_read(_pick(args, "tls_key", str, None), "tls_key"),
        grace_s=_pick(args, "grace_s", float, 30.0), drain_notice_s=_pick(args, "drain_notice_s", float, 2.0),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = FaceAuditServer(config_from(args)).start()
    metrics = f", /metrics on port {server.metrics_port}" if server.metrics_port is not None else ""
    print(f"faceaudit serving gRPC on port {server.port}{metrics}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    print("faceaudit: draining running calls", flush=True)
    server.stop()
    return 0
