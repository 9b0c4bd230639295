"""Cancellation, deadlines and concurrency: the work of an ended call stops, concurrent calls share batches."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from faceaudit.engine.prepare import prepare
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import explain
from faceaudit.models import load_model, resolve_spec
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import DEMO_MODELS, Client, array, pixels

LONG_RISE = {"masks": 30000, "chunk": 16}  # ~40 s of work: it can only end early by being stopped


@pytest.fixture(scope="module")
def identity(client):
    return client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))


def sample(server, name: str, labels: dict[str, str]) -> float:
    return server.telemetry.registry.get_sample_value(name, labels) or 0.0


def forward_passes(server) -> float:
    return sample(server, "faceaudit_forward_passes_total", {"model": "identity"})


def rise_request(seed: int = 0) -> pb.ExplainRequest:
    face = np.random.default_rng(seed).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    request = pb.ExplainRequest(model="identity", method="rise", images=[pixels(face)], targets=[pb.Target(class_index=0)])
    request.options.update(LONG_RISE)
    return request


def wait_until_stable(server, *, settle: float = 0.3, timeout: float = 5.0) -> float:
    """The forward-pass count once it stopped growing for `settle` seconds."""
    deadline = time.monotonic() + timeout
    last = forward_passes(server)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = forward_passes(server)
        if now == last:
            return now
        last = now
    raise AssertionError("forward passes kept growing: the work did not stop")


def in_flight(server, rpc: str) -> float:
    return sample(server, "faceaudit_jobs_in_flight", {"rpc": rpc})


def test_cancelling_a_stream_stops_its_work_within_a_batch(server, client, identity):
    before = forward_passes(server)
    stream = client.explain.ExplainStream(rise_request())
    for event in stream:
        seen = event.progress.done
        if seen >= 64:
            break
    stream.cancel()
    stopped = wait_until_stable(server)
    # Progress is throttled, so the work may be ahead of the last event seen: a few chunks of 16 more,
    # then it stops — nowhere near the request's 30000.
    assert seen <= stopped - before <= seen + 8 * 16 + 64
    time.sleep(0.5)
    assert forward_passes(server) == stopped
    assert in_flight(server, "ExplainStream") == 0  # the slot is free
    assert sample(server, "faceaudit_requests_total", {"rpc": "ExplainStream", "method": "rise", "code": "CANCELLED"}) >= 1


def test_an_expired_deadline_stops_the_work(server, client, identity):
    before = forward_passes(server)
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(rise_request(1), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stopped = wait_until_stable(server)
    assert stopped - before < 3000  # ~0.5 s of work, not 30000 passes
    assert in_flight(server, "Explain") == 0
    assert sample(server, "faceaudit_requests_total", {"rpc": "Explain", "method": "rise", "code": "DEADLINE_EXCEEDED"}) == 1
    # the server serves on
    assert client.models.Get(pb.GetModelRequest(model="identity")).name == "identity"


def test_sixteen_concurrent_clients_share_batches(server, identity):
    loaded = load_model(DEMO_MODELS / "identity.onnx")
    local = prepare(loaded, resolve_spec(loaded))
    faces = np.random.default_rng(5).uniform(0, 255, (16, 64, 64, 3)).astype(np.float32)
    options = {"patch": 16, "stride": 16, "chunk": 4}  # 16 windows per map, in requests of 4 images

    def one(i: int) -> pb.SaliencyMap:
        client = Client.connect(f"127.0.0.1:{server.port}")
        try:
            request = pb.ExplainRequest(model="identity", method="occlusion", images=[pixels(faces[i])],
                                        targets=[pb.Target(class_index=i % 20)])
            request.options.update(options)
            return client.explain.Explain(request, timeout=60).maps[0]
        finally:
            client.channel.close()

    batches_before = sample(server, "faceaudit_batch_size_count", {"model": "identity"})
    small_before = sample(server, "faceaudit_batch_size_bucket", {"model": "identity", "le": "4.0"})
    passes_before = forward_passes(server)
    with ThreadPoolExecutor(16) as pool:
        maps = list(pool.map(one, range(16)))
    for i, served in enumerate(maps):
        expected = explain(local, "occlusion", image=faces[i], target=ExplainTarget(class_index=i % 20), options=options)
        # merged batches pad to other sizes than a lone request: float reassociation noise only
        np.testing.assert_allclose(array(served.values), expected.values, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected.values).max())
        assert served.forward_passes == expected.forward_passes
    assert forward_passes(server) - passes_before == sum(m.forward_passes for m in maps)
    batches = sample(server, "faceaudit_batch_size_count", {"model": "identity"}) - batches_before
    assert batches < 16 * 5  # alone, each map takes 5 runtime batches: the unoccluded face, then 4 chunks of 4
    small = sample(server, "faceaudit_batch_size_bucket", {"model": "identity", "le": "4.0"}) - small_before
    assert small < batches  # some batch of these requests held more than one request's 4 images


@pytest.mark.parametrize("streaming", [False, True])
def test_every_phase_of_a_served_explanation_is_timed(server, client, identity, streaming):
    """Perturbation and aggregation come from the scorer's clock in the thread doing the work, inference
    from the batcher."""
    before = {phase: sample(server, "faceaudit_phase_seconds_count", {"phase": phase})
              for phase in ("perturbation", "inference", "aggregation")}
    request = rise_request()
    request.options.update({"masks": 64})
    if streaming:
        list(client.explain.ExplainStream(request))
    else:
        client.explain.Explain(request)
    for phase, count in before.items():
        assert sample(server, "faceaudit_phase_seconds_count", {"phase": phase}) == count + 1, phase
