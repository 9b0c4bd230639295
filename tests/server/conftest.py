"""An in-process faceaudit server on a free port, and stubs bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

import faceaudit.demo
from faceaudit.server.app import FaceAuditServer, ServerConfig
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc

DEMO_MODELS = Path(faceaudit.demo.__file__).parent / "models"


@dataclass
class Client:
    channel: grpc.Channel
    models: rpc.ModelsStub
    explain: rpc.ExplainStub
    evaluate: rpc.EvaluateStub
    audit: rpc.AuditStub

    @classmethod
    def connect(cls, target: str, credentials: grpc.ChannelCredentials | None = None) -> Client:
        channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        return cls(channel, rpc.ModelsStub(channel), rpc.ExplainStub(channel), rpc.EvaluateStub(channel),
                   rpc.AuditStub(channel))

    def upload(self, name: str, proto: onnx.ModelProto, spec: dict | None = None, chunk: int = 1 << 14) -> pb.ModelInfo:
        data = proto.SerializeToString()
        chunks = [pb.RegisterChunk(data=data[i : i + chunk]) for i in range(0, len(data), chunk)]
        chunks[0].name = name
        if spec:
            chunks[0].spec.update(spec)
        return self.models.Register(iter(chunks))


def start_server(**config: object) -> FaceAuditServer:
    return FaceAuditServer(ServerConfig(**{"host": "127.0.0.1", "port": 0, "model_repository": DEMO_MODELS,
                                           **config})).start()


@contextmanager
def serving(**config: object) -> Iterator[tuple[FaceAuditServer, Client]]:
    """A started server and a client connected to it; both closed at the end of the block."""
    server = start_server(**config)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        yield server, client
    finally:
        client.channel.close()
        server.stop(0)


@pytest.fixture(scope="module")
def server() -> Iterator[FaceAuditServer]:
    running = start_server()
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def client(server: FaceAuditServer) -> Iterator[Client]:
    connected = Client.connect(f"127.0.0.1:{server.port}")
    yield connected
    connected.channel.close()


def pixels(image: np.ndarray) -> pb.Image:
    """A raw float32 image message."""
    values = np.ascontiguousarray(image, dtype="<f4")
    return pb.Image(pixels=pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=values.shape, data=values.tobytes()))


def array(tensor: pb.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype="<f4").reshape(tuple(tensor.shape))
