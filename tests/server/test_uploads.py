"""Model uploads within the server's limits: stalled or endless uploads end, a few at a time, others keep being served."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import Client, serving, start_server


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test: every stalled client stream below then finishes."""
    event = threading.Event()
    yield event
    event.set()


def stalled(release: threading.Event, name: str = "slow") -> Iterator[pb.RegisterChunk]:
    yield pb.RegisterChunk(name=name, data=b"\x08\x08")
    release.wait()


def trickle(release: threading.Event, every_s: float) -> Iterator[pb.RegisterChunk]:
    """One byte every `every_s` seconds, never ending: never idle, never done."""
    yield pb.RegisterChunk(name="endless", data=b"\x08")
    while not release.wait(every_s):
        yield pb.RegisterChunk(data=b"\x08")


def upload_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "faceaudit-upload"]


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_stalled_upload_ends_after_the_idle_timeout_and_its_reader_stops(release):
    server = start_server(upload_idle_s=0.5)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            client.models.Register(stalled(release), timeout=30)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert info.value.details().startswith("upload_idle_s:") and "--upload-idle-s" in info.value.details()
        assert 0.5 <= time.monotonic() - started < 5
        assert wait_for(lambda: not upload_threads())  # the helper thread ended with the call
        info = client.upload("fine", zoo.linear_classifier(), {"kind": "classifier"})  # still serving uploads
        assert info.name == "fine"
    finally:
        client.channel.close()
        server.stop(0)


def test_an_upload_that_never_ends_meets_the_total_deadline(release):
    server = start_server(upload_idle_s=5, upload_total_s=1.0)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            client.models.Register(trickle(release, 0.1), timeout=30)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert info.value.details().startswith("upload_total_s:")
        assert 1.0 <= time.monotonic() - started < 5
    finally:
        client.channel.close()
        server.stop(0)


def test_stalled_uploads_cannot_take_every_call_slot(release):
    server = start_server(max_concurrent_rpcs=8, max_concurrent_uploads=2, upload_idle_s=30)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        futures = [client.models.Register.future(stalled(release, f"slow{i}"), timeout=30) for i in range(8)]
        assert wait_for(lambda: sum(f.done() for f in futures) == 6)  # every upload past the cap, at once
        time.sleep(0.2)  # and no more
        refused = [f for f in futures if f.done()]
        assert len(refused) == 6
        for future in refused:
            assert future.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert future.details().startswith("max_concurrent_uploads:")
        assert client.models.List(pb.ListModelsRequest(), timeout=5) is not None  # a slot is free for others
        info = client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"), timeout=10)
        assert info.name == "identity"
        release.set()  # the two stalled streams end: half-closed with 2 bytes, which are no ONNX model
        for future in futures:
            if future not in refused:
                assert future.code() == grpc.StatusCode.INVALID_ARGUMENT and future.details().startswith("model:")
        assert client.upload("after", zoo.linear_classifier(), {"kind": "classifier"}).name == "after"  # slots freed
    finally:
        client.channel.close()
        server.stop(0)


def test_name_and_spec_are_checked_before_the_rest_is_received(release):
    server = start_server(upload_idle_s=30)
    client = Client.connect(f"127.0.0.1:{server.port}")
    try:
        for first, field in ((pb.RegisterChunk(name="../x", data=b"\x08"), "name:"),
                             (pb.RegisterChunk(data=b"\x08"), "name:")):
            def chunks(first=first) -> Iterator[pb.RegisterChunk]:
                yield first
                release.wait()  # were the server to wait for the rest, this would hit the 10 s deadline

            with pytest.raises(grpc.RpcError) as info:
                client.models.Register(chunks(), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith(field)
    finally:
        client.channel.close()
        server.stop(0)


def test_upload_limits_are_validated():
    from faceaudit.errors import InvalidRequest
    from faceaudit.server.app import ServerConfig

    # inf seconds made every upload INTERNAL (queue.get(timeout=inf) overflows); as did max_call_s's timer
    for config, field in (({"upload_idle_s": 0}, "upload_idle_s"), ({"upload_total_s": -1}, "upload_total_s"),
                          ({"upload_idle_s": float("inf"), "upload_total_s": float("inf")}, "upload_idle_s"),
                          ({"upload_total_s": float("inf")}, "upload_total_s"), ({"max_call_s": 1e300}, "max_call_s"),
                          ({"upload_idle_s": float("nan")}, "upload_idle_s"),
                          ({"max_concurrent_uploads": 0}, "max_concurrent_uploads"),
                          ({"max_concurrent_uploads": 8, "max_concurrent_rpcs": 8}, "max_concurrent_uploads")):
        with pytest.raises(InvalidRequest) as info:
            ServerConfig(**config)
        assert info.value.field == field


class MostAtOnce:
    """Wraps a function, recording the most calls that ran at once (each held 0.2 s, long enough for
    concurrent callers to arrive meanwhile)."""

    def __init__(self, real):
        self.real, self.running, self.most, self.lock = real, 0, 0, threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.2)
        try:
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def test_uploaded_models_are_parsed_and_prepared_one_at_a_time(monkeypatch):
    """Loading and preparing peak at several times the model's size: concurrent uploads take turns."""
    import faceaudit.server.models_service as service

    counted = MostAtOnce(service.load_model)
    monkeypatch.setattr(service, "load_model", counted)
    with serving() as (server, client), ThreadPoolExecutor(max_workers=3) as pool:
        names = list(pool.map(lambda i: client.upload(f"m{i}", zoo.linear_classifier(), {"kind": "classifier"}).name,
                              range(3)))
    assert names == ["m0", "m1", "m2"] and counted.most == 1


def test_repository_models_take_their_turn_with_uploads_to_be_prepared(monkeypatch):
    """RegisterFromRepository prepared beside uploads and beside each other: memory peaks added up."""
    import faceaudit.server.model_store as store

    counted = MostAtOnce(store.prepare)
    monkeypatch.setattr(store, "prepare", counted)
    with serving() as (server, client), ThreadPoolExecutor(max_workers=3) as pool:
        register = [lambda: client.upload("m", zoo.linear_classifier(), {"kind": "classifier"}).name] + [
            lambda name=name: client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name=name)).name
            for name in ("identity", "embedding")]
        names = list(pool.map(lambda f: f(), register))
    assert names == ["m", "identity", "embedding"] and counted.most == 1
