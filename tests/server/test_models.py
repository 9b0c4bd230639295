"""Models service: upload in chunks, repository lookups confined to the folder, identity by name and hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import DEMO_MODELS, Client, start_server


def code_and_details(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_upload_in_many_chunks_is_identified_by_content_hash(client):
    proto = zoo.vgg_classifier()
    data = proto.SerializeToString()
    info = client.upload("vgg", proto, {"kind": "classifier"}, chunk=997)  # many odd-sized chunks
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size_bytes == len(data)
    assert (info.kind, info.white_box, info.batch_mode) == ("classifier", True, "dynamic")
    assert info.details["operators"]["Conv"] >= 1
    assert client.models.Get(pb.GetModelRequest(model=info.sha256)).name == "vgg"
    again = client.upload("vgg", proto, {"kind": "classifier"})  # same bytes and spec: the same model
    assert again.sha256 == info.sha256
    code, details = code_and_details(lambda: client.upload("vgg", zoo.vgg_classifier(seed=1), {"kind": "classifier"}))
    assert code == grpc.StatusCode.ALREADY_EXISTS and details.startswith("name:")


def test_repository_model_with_its_spec_file(client):
    info = client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="embedding"))
    assert (info.kind, info.height, info.width) == ("embedding", 64, 64)
    assert info.sha256 == hashlib.sha256((DEMO_MODELS / "embedding.onnx").read_bytes()).hexdigest()
    assert info.details["source"] == "embedding.onnx"  # not the server's folder layout
    assert "embedding" in [m.name for m in client.models.List(pb.ListModelsRequest()).models]


@pytest.mark.parametrize("name", ["../demo/models/identity", "/etc/passwd", "sub/identity", "", "a" * 200])
def test_repository_names_are_names_not_paths(client, name):
    code, details = code_and_details(
        lambda: client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name=name)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("name:")


def test_a_symlink_out_of_the_repository_is_not_followed(tmp_path: Path):
    repository = tmp_path / "repo"
    repository.mkdir()
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(zoo.vgg_classifier().SerializeToString())
    (repository / "escape.onnx").symlink_to(outside)
    server = start_server(model_repository=repository)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        code, _ = code_and_details(
            lambda: client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="escape")))
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = code_and_details(
            lambda: client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="missing")))
        assert code == grpc.StatusCode.NOT_FOUND
    finally:
        client.channel.close()
        server.stop(0)


def test_bad_uploads(client):
    code, details = code_and_details(lambda: client.models.Register(iter([pb.RegisterChunk(name="junk", data=b"x" * 100)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ONNX" in details
    code, details = code_and_details(lambda: client.models.Register(iter([pb.RegisterChunk(data=b"x")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("name:")
    code, details = code_and_details(lambda: client.models.Register(iter([])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("chunks:")
    chunks = [pb.RegisterChunk(name="two_names", data=b"x"), pb.RegisterChunk(name="again", data=b"y")]
    code, details = code_and_details(lambda: client.models.Register(iter(chunks)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("chunks[1].name:")
    code, details = code_and_details(lambda: client.upload("badspec", zoo.vgg_classifier(), {"layout": "NCWH"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("layout:")


def test_model_size_limit_is_resource_exhausted_while_uploading():
    server = start_server(max_model_bytes=10_000)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        code, details = code_and_details(lambda: client.upload("big", zoo.vgg_classifier(), chunk=4096))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "10,000" in details
    finally:
        client.channel.close()
        server.stop(0)


def test_unregister_then_not_found(client):
    info = client.upload("short_lived", zoo.linear_classifier(), {"kind": "classifier"})
    removed = client.models.Unregister(pb.UnregisterRequest(model="short_lived"))
    assert removed.model.sha256 == info.sha256
    for call in (lambda: client.models.Get(pb.GetModelRequest(model="short_lived")),
                 lambda: client.models.Unregister(pb.UnregisterRequest(model=info.sha256))):
        code, details = code_and_details(call)
        assert code == grpc.StatusCode.NOT_FOUND and details.startswith("model:")
    code, details = code_and_details(lambda: client.models.Get(pb.GetModelRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("model:")
