"""Server lifecycle and transport: auth, TLS, health, reflection, message limits, graceful shutdown."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from faceaudit.errors import InvalidRequest
from faceaudit.server.app import ServerConfig
from faceaudit.server.auth import read_token
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import DEMO_MODELS, Client, pixels, start_server

TOKEN = "s3cret-token-0123456789"


def health_status(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service)).status


def test_health_is_serving_for_every_service(client):
    for service in ("", "faceaudit.v1.Models", "faceaudit.v1.Explain"):
        assert health_status(client.channel, service) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(client):
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in reply.list_services_response.service}
    assert {"faceaudit.v1.Models", "faceaudit.v1.Explain", "faceaudit.v1.Evaluate", "faceaudit.v1.Audit",
            "grpc.health.v1.Health"} <= names
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="faceaudit.v1.Explain")]))
    assert reply.file_descriptor_response.file_descriptor_proto  # generic tools can build requests


@pytest.fixture(scope="module")
def guarded():
    server = start_server(token=TOKEN)
    yield server
    server.stop(0)


@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer wrong-token-0123456789"),),
                                      (("authorization", TOKEN),)])
def test_missing_or_wrong_token_is_unauthenticated(guarded, metadata):
    client = Client.connect(f"127.0.0.1:{guarded.port}")
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.models.List(pb.ListModelsRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:  # client streaming refused too, before any handler runs
            client.models.Register(iter([pb.RegisterChunk(name="x", data=b"x")]), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health_status(client.channel) == health_pb2.HealthCheckResponse.SERVING  # probes stay open
    finally:
        client.channel.close()


def test_right_token_is_let_through(guarded):
    client = Client.connect(f"127.0.0.1:{guarded.port}")
    try:
        reply = client.models.List(pb.ListModelsRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert list(reply.models) == []
    finally:
        client.channel.close()


def test_token_from_file_or_environment(tmp_path: Path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token(str(path), env={}) == TOKEN
    assert read_token(None, env={"FACEAUDIT_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, env={}) is None
    path.write_text("short")
    with pytest.raises(InvalidRequest, match="^token_file:"):
        read_token(str(path), env={})
    with pytest.raises(InvalidRequest, match="^token_file:"):
        read_token(str(tmp_path / "missing"), env={})


def test_oversized_message_is_resource_exhausted_and_the_server_keeps_serving():
    server = start_server(max_receive_bytes=1 << 20)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        big = np.zeros((600, 600, 3), np.float32)  # 4.3 MB
        with pytest.raises(grpc.RpcError) as info:
            client.explain.Explain(pb.ExplainRequest(model="x", method="occlusion", images=[pixels(big)]))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert list(client.models.List(pb.ListModelsRequest()).models) == []
    finally:
        client.channel.close()
        server.stop(0)


def test_config_is_validated():
    with pytest.raises(InvalidRequest, match="^tls_cert:"):
        ServerConfig(tls_cert=b"cert")
    with pytest.raises(InvalidRequest, match="^model_repository:"):
        ServerConfig(model_repository=Path("/nonexistent/folder"))
    with pytest.raises(InvalidRequest, match="^port:"):
        ServerConfig(port=70000)


def test_preloaded_models_are_registered_before_the_server_says_serving(tmp_path: Path):
    server = start_server(preload=("*",))
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        assert health_status(client.channel) == health_pb2.HealthCheckResponse.SERVING
        names = sorted(m.name for m in client.models.List(pb.ListModelsRequest()).models)
        assert names == ["attribute", "embedding", "identity"]  # every NAME.onnx of the repository
    finally:
        client.channel.close()
        server.stop(0)
    shutil.copy(DEMO_MODELS / "identity.onnx", tmp_path / "identity.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    one = start_server(model_repository=tmp_path, preload=("identity",))
    one.stop(0)
    with pytest.raises(InvalidRequest, match="^preload: broken: "):  # a model that fails stops the start
        start_server(model_repository=tmp_path, preload=("*",), port=one.port)
    with pytest.raises(InvalidRequest, match="^preload: absent: "):
        start_server(model_repository=tmp_path, preload=("identity", "absent"))
    again = start_server(model_repository=tmp_path, port=one.port)  # the failed start let its port go
    again.stop(0)


def test_preloading_every_model_skips_files_no_client_could_name(tmp_path: Path, caplog):
    shutil.copy(DEMO_MODELS / "identity.onnx", tmp_path / "identity.onnx")
    shutil.copy(DEMO_MODELS / "identity.onnx", tmp_path / "identity v2.onnx")  # a space: not a model name
    shutil.copy(DEMO_MODELS / "identity.onnx", tmp_path / f"{'a' * 64}.onnx")  # reads as a sha256
    with caplog.at_level(logging.WARNING, logger="faceaudit.server"):
        server = start_server(model_repository=tmp_path, preload=("*",))
    try:
        assert [entry.name for entry in server.store.list()] == ["identity"]
        warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "identity v2.onnx" in warning and f"{'a' * 64}.onnx" in warning
    finally:
        server.stop(0)


def test_preload_is_validated():
    with pytest.raises(InvalidRequest, match="^preload: .*model repository"):
        ServerConfig(preload=("identity",))
    with pytest.raises(InvalidRequest, match="^preload: '\\*'"):
        ServerConfig(model_repository=DEMO_MODELS, preload=("*", "identity"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls(tmp_path: Path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    server = start_server(tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    secure = Client.connect(f"localhost:{server.port}", grpc.ssl_channel_credentials(cert.read_bytes()))
    plain = Client.connect(f"localhost:{server.port}")
    try:
        assert list(secure.models.List(pb.ListModelsRequest()).models) == []
        with pytest.raises(grpc.RpcError) as info:
            plain.models.List(pb.ListModelsRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        secure.channel.close()
        plain.channel.close()
        server.stop(0)


def test_graceful_shutdown_reports_not_serving_and_drains_running_calls():
    server = start_server(drain_notice_s=2.0, grace_s=30)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))
        face = np.random.default_rng(0).uniform(0, 255, (64, 64, 3)).astype(np.float32)
        request = pb.ExplainRequest(model="identity", method="rise", images=[pixels(face)],
                                    targets=[pb.Target(class_index=0)])
        request.options.update({"masks": 800, "chunk": 16})
        stream = client.explain.ExplainStream(request)
        assert next(stream).HasField("progress")  # the job is running
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        deadline = time.monotonic() + 1.5  # inside the 2 s drain notice, however loaded the machine
        while health_status(client.channel) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health never turned NOT_SERVING"
            time.sleep(0.02)
        events = list(stream)  # the running call finishes with its map
        assert events[-1].HasField("map") and events[-1].map.forward_passes == 800
        stopper.join()
        with pytest.raises(grpc.RpcError) as info:
            client.models.List(pb.ListModelsRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        client.channel.close()


def test_metrics_endpoint_counts_the_calls():
    import urllib.request

    server = start_server(metrics_port=0)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        client.models.List(pb.ListModelsRequest())
        with pytest.raises(grpc.RpcError):
            client.models.Get(pb.GetModelRequest(model="nobody"))
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
        assert 'faceaudit_requests_total{code="OK",method="",rpc="List"} 1.0' in text
        assert 'faceaudit_requests_total{code="NOT_FOUND",method="",rpc="Get"} 1.0' in text
    finally:
        client.channel.close()
        server.stop(0)
    assert server.metrics_port is None  # the endpoint closed with the server
