"""Every way a call ends stops its work, even a forward pass that never ends on its own.

The model (tests.engine.hostile_graphs.loop_if_bright) is valid ONNX: preparation probes it with
inputs in [0, 1) and takes it; served with scale 1, a grey-200 image starts a Loop of 2^40 iterations,
a grey-1 image runs at once. Only a stopped run ends the first, so each test's timing tells whether
the server stopped it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

import faceaudit.server.explain_service as explain_service
from faceaudit.server.app import FaceAuditServer
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.engine.hostile_graphs import loop_if_bright
from tests.server.conftest import Client, pixels, serving

ENDLESS, QUICK = 200.0, 1.0  # grey levels: above and below the Loop's threshold of 2


def serving_bright(**config: object) -> Iterator[tuple[FaceAuditServer, Client]]:
    with serving(**config) as (server, client):
        client.upload("bright", loop_if_bright(), {"kind": "classifier", "scale": 1})
        yield server, client


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[FaceAuditServer, Client]]:
    """A server allowing 1.5 s of computing per call (--max-call-s)."""
    yield from serving_bright(max_call_s=1.5)


@pytest.fixture
def unlimited() -> Iterator[tuple[FaceAuditServer, Client]]:
    """A server with no limit per call: only the client ends a call."""
    yield from serving_bright()


def explain_request(grey: float) -> pb.ExplainRequest:
    request = pb.ExplainRequest(model="bright", method="occlusion", images=[pixels(np.full((16, 16, 3), grey, np.float32))],
                                targets=[pb.Target(class_index=0)])
    request.options.update({"patch": 8, "stride": 8})
    return request


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, float]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details(), time.monotonic() - started


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def batcher(server: FaceAuditServer):
    return server.store.get("bright").model.session.batcher


def in_flight(server: FaceAuditServer, rpc: str) -> float:
    return server.telemetry.registry.get_sample_value("faceaudit_jobs_in_flight", {"rpc": rpc}) or 0.0


def test_the_servers_limit_stops_a_running_batch_of_a_call_without_deadline(limited):
    server, client = limited
    # The client's 8 s deadline only keeps a regression from hanging: the server's 1.5 s must end it.
    code, details, took = failure(lambda: client.explain.Explain(explain_request(ENDLESS), timeout=8))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "limit of 1.5 s per call (--max-call-s)" in details
    assert took < 6
    assert eventually(lambda: not batcher(server)._running)  # the model's runtime thread is free
    assert client.explain.Explain(explain_request(QUICK), timeout=10).maps[0].forward_passes == 5  # 4 windows + 1


@pytest.mark.parametrize("ended_by", ["server limit", "client deadline"])
def test_a_games_own_session_stops_with_its_call(limited, ended_by):
    """Invariance reads layers through a session of its own, outside the batcher."""
    server, client = limited
    request = pb.EvaluateRequest(model="bright", game="invariance", images=[pixels(np.full((16, 16, 3), ENDLESS, np.float32))])
    request.options.update({"layers": ["logits"], "translations": [1]})
    timeout = 8 if ended_by == "server limit" else 0.5
    code, details, took = failure(lambda: list(client.evaluate.Evaluate(request, timeout=timeout)))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and took < 6
    if ended_by == "server limit":
        assert "(--max-call-s)" in details
    # the worker and the RPC's thread are released: no stream thread runs on, the call is no longer in flight
    assert eventually(lambda: not any(t.name == "faceaudit-stream" for t in threading.enumerate()))
    assert eventually(lambda: in_flight(server, "Evaluate") == 0)


def test_a_call_that_ended_before_it_reached_the_model_never_holds_its_runtime_thread(unlimited, monkeypatch):
    server, client = unlimited
    looked_up = explain_service.method_named

    def slow(*args: object) -> object:  # the client's deadline passes before the call binds the model
        time.sleep(0.4)
        return looked_up(*args)

    monkeypatch.setattr(explain_service, "method_named", slow)
    code, _, _ = failure(lambda: client.explain.Explain(explain_request(ENDLESS), timeout=0.1))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.6)  # the server side has bound the model and submitted by now
    monkeypatch.setattr(explain_service, "method_named", looked_up)
    assert client.explain.Explain(explain_request(QUICK), timeout=5).maps[0].forward_passes == 5
    assert not batcher(server)._running


def test_unregister_does_not_wait_for_a_running_batch_and_its_call_still_stops_it(unlimited):
    server, client = unlimited
    running = batcher(server)
    stuck = client.explain.Explain.future(explain_request(ENDLESS))  # a live call, no deadline
    assert eventually(lambda: bool(running._running))
    started = time.monotonic()
    client.models.Unregister(pb.UnregisterRequest(model="bright"), timeout=5)
    assert time.monotonic() - started < 2
    assert [m.name for m in client.models.List(pb.ListModelsRequest()).models] == []
    assert not stuck.done()  # the live call's batch was not taken from it
    stuck.cancel()
    assert eventually(lambda: not running._thread.is_alive())  # its cancel stopped the batch, the thread ended
