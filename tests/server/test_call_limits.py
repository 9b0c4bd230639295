"""A server's limits on one call: its maps' forward passes, its computing time, the size of its status message."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from faceaudit.server.app import FaceAuditServer
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import Client, pixels, serving
from tests.server.test_calls import LONG_RISE, forward_passes, wait_until_stable

FACE = np.random.default_rng(3).uniform(0, 255, (64, 64, 3)).astype(np.float32)


def serving_identity(**config: object) -> Iterator[tuple[FaceAuditServer, Client]]:
    with serving(**config) as (server, client):
        client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))
        yield server, client


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[FaceAuditServer, Client]]:
    """A server allowing 2,000 forward passes per request."""
    yield from serving_identity(max_request_passes=2000)


@pytest.fixture(scope="module")
def timed() -> Iterator[tuple[FaceAuditServer, Client]]:
    """A server allowing 1.5 s of computing per call."""
    yield from serving_identity(max_call_s=1.5)


def rise(images: int, masks: int, chunk: int = 100) -> pb.ExplainRequest:
    request = pb.ExplainRequest(model="identity", method="rise", images=[pixels(FACE)] * images,
                                targets=[pb.Target(class_index=0)])
    request.options.update({"masks": masks, "chunk": chunk})
    return request


def status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_a_request_within_the_budget_runs_every_map(limited):
    server, client = limited
    before = forward_passes(server)
    response = client.explain.Explain(rise(2, 1000), timeout=60)  # 2 maps × 1000 = the budget exactly
    assert [m.forward_passes for m in response.maps] == [1000, 1000]
    assert wait_until_stable(server) - before == 2000


@pytest.mark.parametrize("streaming", [False, True])
def test_a_request_over_the_budget_is_refused_after_one_chunk(limited, streaming):
    server, client = limited
    before = forward_passes(server)
    send = client.explain.ExplainStream if streaming else client.explain.Explain
    code, details = status(lambda: list(send(rise(3, 1000), timeout=60)) if streaming else send(rise(3, 1000)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("images, targets: 3 maps would take about 3,000 forward passes") and "2,000" in details
    ran = wait_until_stable(server) - before  # the first chunk (100 masks) announced the map's 1000
    assert 100 <= ran <= 200  # the scorer fills the next batch while one runs: a chunk and a batch at most


def test_one_map_over_the_budget_names_the_options(limited):
    code, details = status(lambda: limited[1].explain.Explain(rise(1, 5000)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("options: one rise map takes 5,000")


def test_maps_an_evaluation_computes_share_the_budget(limited):
    client = limited[1]
    items = [pb.EvaluateItem(image=pixels(FACE), target=pb.Target(class_index=0))] * 40
    request = pb.EvaluateRequest(model="identity", game="deletion", methods=["occlusion"], items=items)
    code, details = status(lambda: list(client.evaluate.Evaluate(request, timeout=60)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("items, methods: 40 maps")


@pytest.mark.parametrize("streaming", [False, True])
def test_a_call_without_a_deadline_stops_at_the_servers_limit(timed, streaming):
    server, client = timed
    endless = rise(1, LONG_RISE["masks"], LONG_RISE["chunk"])  # ~40 s of work, within the budget
    started = time.monotonic()
    send = client.explain.ExplainStream if streaming else client.explain.Explain
    code, details = status(lambda: list(send(endless)) if streaming else send(endless))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "limit of 1.5 s per call (--max-call-s)" in details
    assert 1.5 <= time.monotonic() - started < 10
    wait_until_stable(server)  # the work stopped too
    quick = pb.ExplainRequest(model="identity", method="occlusion", images=[pixels(FACE)],
                              targets=[pb.Target(class_index=0)])
    quick.options.update({"patch": 16, "stride": 16})
    assert client.explain.Explain(quick, timeout=30).maps[0].forward_passes == 17  # others go on: 16 windows + 1


@pytest.mark.parametrize("length", [6_000, 20_000])
def test_long_echoed_values_keep_the_status_intact(client, length):
    """Past ~8 KiB of status message clients refuse the trailer (RESOURCE_EXHAUSTED) instead of the real status."""
    client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))
    for _ in range(5):  # the failure was intermittent
        code, details = status(lambda: client.models.Get(pb.GetModelRequest(model="x" * length), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND and details.startswith("model: no registered model 'xxx")
        assert len(details) < 300 and f"{length:,} characters" in details
        code, details = status(lambda: client.explain.Explain(
            pb.ExplainRequest(model="identity", method="m" * length, images=[pixels(FACE)]), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("method: unknown method 'mmm")
        assert len(details.encode()) < 2048
        code, details = status(lambda: client.models.RegisterFromRepository(
            pb.RegisterFromRepositoryRequest(name="é" * length), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("name: 'ééé")


def test_every_status_message_is_clipped_to_a_few_kib():
    from faceaudit.server.calls import MAX_STATUS_MESSAGE_BYTES, clipped

    assert clipped("short") == "short"
    for text in ("a" * 10_000, "é" * 10_000, "a" + "€" * 5_000):
        cut = clipped(text)
        assert len(cut.encode()) <= MAX_STATUS_MESSAGE_BYTES and cut.endswith("…")
        assert text.startswith(cut[:-1])  # whole characters only
