"""Models service: upload in chunks, repository lookups confined to the folder, identity by name and hash."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import grpc
import pytest

from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import DEMO_MODELS, Client, start_server
from tests.server.test_calls import forward_passes, rise_request


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


def test_the_same_model_and_spec_by_repository_and_by_upload_is_one_model(client):
    """The repository's spec file is read on the server; a client uploading the same file sends its fields:
    the same resolved spec, so the same model (a spec that differs still conflicts)."""
    import onnx
    import yaml

    client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="attribute"))
    proto = onnx.load(DEMO_MODELS / "attribute.onnx")
    spec = yaml.safe_load((DEMO_MODELS / "attribute.spec.yaml").read_text())
    assert client.upload("attribute", proto, spec).name == "attribute"
    other = {**spec, "mean": [0.0, 0.0, 0.0]}
    code, details = code_and_details(lambda: client.upload("attribute", proto, other))
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
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("model: not an ONNX model")
    broken = zoo.vgg_classifier()
    broken.graph.node[0].input[0] = "no_such_tensor"
    code, details = code_and_details(lambda: client.upload("broken", broken, {"kind": "classifier"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("model: it fails the ONNX checker")
    code, details = code_and_details(lambda: client.models.Register(iter([pb.RegisterChunk(data=b"x")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("name:")
    code, details = code_and_details(lambda: client.models.Register(iter([])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("chunks:")
    chunks = [pb.RegisterChunk(name="two_names", data=b"x"), pb.RegisterChunk(name="again", data=b"y")]
    code, details = code_and_details(lambda: client.models.Register(iter(chunks)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("chunks[1].name:")
    code, details = code_and_details(lambda: client.upload("badspec", zoo.vgg_classifier(), {"layout": "NCWH"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("layout:")


@pytest.mark.parametrize(("spec", "field"), [({"scale": float("nan")}, "spec.scale"),
                                           ({"mean": [127.5, float("inf"), 0]}, "spec.mean[1]"),
                                           ({"std": [float("-inf")]}, "spec.std[0]")])
def test_non_finite_spec_values_are_invalid_and_nothing_is_registered(client, spec, field):
    code, details = code_and_details(lambda: client.upload("nan_spec", zoo.linear_classifier(), spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}: ")
    request = pb.RegisterFromRepositoryRequest(name="identity")
    request.spec.update(spec)
    code, details = code_and_details(lambda: client.models.RegisterFromRepository(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}: ")
    assert "nan_spec" not in [m.name for m in client.models.List(pb.ListModelsRequest()).models]


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


def running_rise(client: Client, server) -> tuple[threading.Thread, dict]:
    """A long RISE Explain on `identity` in a thread, returned once its first forward passes ran."""
    request = rise_request()
    outcome: dict = {}

    def explain() -> None:
        try:
            client.explain.Explain(request, timeout=60)
            outcome["code"] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            outcome["code"], outcome["details"] = error.code(), error.details()

    thread = threading.Thread(target=explain)
    thread.start()
    deadline = time.monotonic() + 10
    while forward_passes(server) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return thread, outcome


@pytest.mark.parametrize("ending", ["unregister", "shutdown"])
def test_a_call_on_a_model_taken_away_while_it_runs(ending):
    """Unregister: NOT_FOUND, what a retry would get (UNAVAILABLE invites blind retries); shutdown: UNAVAILABLE."""
    server = start_server()
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))
        thread, outcome = running_rise(client, server)
        if ending == "unregister":
            client.models.Unregister(pb.UnregisterRequest(model="identity"))
        else:
            server.store.close()  # what shutdown does once grpc stopped taking calls
        thread.join(30)
        if ending == "unregister":
            assert outcome["code"] == grpc.StatusCode.NOT_FOUND
            assert outcome["details"] == "model: identity was unregistered while the call ran"
            info = client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))
            assert info.name == "identity"  # the server goes on
        else:
            assert outcome["code"] == grpc.StatusCode.UNAVAILABLE and "shutting down" in outcome["details"]
    finally:
        client.channel.close()
        server.stop(0)
