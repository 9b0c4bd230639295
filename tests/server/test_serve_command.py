"""`faceaudit serve`: flags over environment over defaults; a real process serves, then drains on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faceaudit.cli.main import build_parser
from faceaudit.cli.serve import config_from
from faceaudit.errors import InvalidRequest

from tests.server.conftest import DEMO_MODELS


def parse(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_flags_override_environment_over_defaults(monkeypatch, tmp_path):
    for name in [k for k in os.environ if k.startswith("FACEAUDIT_")]:
        monkeypatch.delenv(name)
    default = config_from(parse())
    assert (default.port, default.metrics_port, default.token, default.runtime.max_batch) == (50051, None, None, 64)
    token = tmp_path / "token"
    token.write_text("0123456789abcdef-token")
    monkeypatch.setenv("FACEAUDIT_PORT", "6000")
    monkeypatch.setenv("FACEAUDIT_MAX_BATCH", "16")
    monkeypatch.setenv("FACEAUDIT_MAX_QUEUE_DELAY_MS", "5")
    monkeypatch.setenv("FACEAUDIT_TOKEN_FILE", str(token))
    monkeypatch.setenv("FACEAUDIT_MODEL_REPOSITORY", str(DEMO_MODELS))
    from_env = config_from(parse())
    assert (from_env.port, from_env.runtime.max_batch, from_env.max_queue_delay_ms) == (6000, 16, 5.0)
    assert from_env.token == "0123456789abcdef-token" and from_env.model_repository == DEMO_MODELS
    monkeypatch.setenv("FACEAUDIT_PROBE_S", "5")
    assert config_from(parse()).runtime.probe_seconds == 5.0
    assert config_from(parse("--probe-s", "7.5")).runtime.probe_seconds == 7.5
    monkeypatch.setenv("FACEAUDIT_PRELOAD", " identity, attribute ")
    assert config_from(parse()).preload == ("identity", "attribute")
    assert config_from(parse("--preload", "*")).preload == ("*",)
    flagged = config_from(parse("--port", "7000", "--max-batch", "8", "--max-message-mib", "2"))
    assert (flagged.port, flagged.runtime.max_batch, flagged.max_receive_bytes) == (7000, 8, 2 << 20)


def test_limits_of_uploads_and_calls_from_flags_and_environment(monkeypatch):
    for name in [k for k in os.environ if k.startswith("FACEAUDIT_")]:
        monkeypatch.delenv(name)
    default = config_from(parse())
    assert (default.upload_idle_s, default.upload_total_s, default.max_concurrent_uploads) == (30.0, 600.0, 4)
    assert (default.max_request_passes, default.max_call_s) == (5_000_000, None)
    monkeypatch.setenv("FACEAUDIT_UPLOAD_IDLE_S", "5")
    monkeypatch.setenv("FACEAUDIT_MAX_CALL_S", "3600")
    monkeypatch.setenv("FACEAUDIT_MAX_REQUEST_PASSES", "0")  # 0: no limit
    from_env = config_from(parse())
    assert (from_env.upload_idle_s, from_env.max_call_s, from_env.max_request_passes) == (5.0, 3600.0, None)
    flagged = config_from(parse("--upload-idle-s", "2", "--upload-total-s", "60", "--max-concurrent-uploads", "2",
                                "--max-request-passes", "1000", "--max-call-s", "0"))
    assert (flagged.upload_idle_s, flagged.upload_total_s, flagged.max_concurrent_uploads) == (2.0, 60.0, 2)
    assert (flagged.max_request_passes, flagged.max_call_s) == (1000, None)
    with pytest.raises(InvalidRequest, match="^max_concurrent_uploads:"):
        config_from(parse("--max-concurrent-rpcs", "4"))  # 4 uploads would take every call


def test_bad_environment_values_are_named(monkeypatch):
    monkeypatch.setenv("FACEAUDIT_PORT", "fifty")
    with pytest.raises(InvalidRequest, match="^FACEAUDIT_PORT:"):
        config_from(parse())
    monkeypatch.setenv("FACEAUDIT_PORT", "0")
    with pytest.raises(InvalidRequest, match="^tls_cert:"):
        config_from(parse("--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"))


@pytest.mark.slow  # a fresh interpreter imports the whole package: seconds on a loaded machine
def test_the_command_serves_and_stops_on_sigterm():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEAUDIT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "faceaudit.cli.main", "serve", "--host", "127.0.0.1", "--port", "0",
         "--model-repository", str(DEMO_MODELS), "--drain-notice-s", "0", "--grace-s", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("faceaudit serving gRPC on port"), line + process.stderr.read()
        port = int(line.split()[-1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
