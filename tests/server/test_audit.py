"""Audit over gRPC: the streamed summary is the audit.json the same audit writes in process."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from faceaudit.audit.run import run_audit
from faceaudit.demo.dataset import write_attribute_dataset
from faceaudit.engine.prepare import prepare
from faceaudit.models import load_model, resolve_spec
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.server.conftest import DEMO_MODELS, serving

OPTIONS = {"cms": {"patch": 16, "stride": 8}, "methods": {"occlusion": {"patch": 16, "stride": 16}}}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_attribute_dataset(root / "faces", identities=2)
    (root / "escape").symlink_to(tmp_path_factory.mktemp("elsewhere"))
    return root


@pytest.fixture(scope="module")
def audit_server(datasets):
    with serving(dataset_repository=datasets) as (server, client):
        client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="attribute"))
        yield server, client


@pytest.fixture(scope="module")
def auditing(audit_server):
    return audit_server[1]


def audit_request(dataset: str = "faces") -> pb.AuditRequest:
    request = pb.AuditRequest(model="attribute", dataset=dataset, methods=["occlusion"], games=["confidence"],
                              group_column="skin")
    request.options.update(OPTIONS)
    return request


def test_summary_equals_the_in_process_audit(auditing, datasets, tmp_path):
    events = list(auditing.audit.Audit(audit_request()))
    assert events[-1].HasField("summary") and all(e.HasField("progress") for e in events[:-1])
    assert events[-2].progress.done == events[-2].progress.total
    served = json_format.MessageToDict(events[-1].summary)
    loaded = load_model(DEMO_MODELS / "attribute.onnx")
    local = json.loads(run_audit(prepare(loaded, resolve_spec(loaded)), datasets / "faces", tmp_path, methods=["occlusion"],
                                 games=["confidence"], options=OPTIONS, group_column="skin").read_text())
    untimed = lambda games: {name: {k: v for k, v in game.items() if k != "seconds"} for name, game in games.items()}  # noqa: E731
    assert untimed(served["games"]) == untimed(local["games"])  # every number but the wall-clock time
    assert served["methods"]["occlusion"]["forward_passes"] == local["methods"]["occlusion"]["forward_passes"]
    assert served["cms"]["groups"].keys() == local["cms"]["groups"].keys() == {"light", "dark"}
    assert served["dataset"]["path"] == "faces" and served["model"]["path"] == "attribute.onnx"  # no server paths


@pytest.mark.parametrize(("dataset", "code"), [("../faces", grpc.StatusCode.INVALID_ARGUMENT),
                                               ("missing", grpc.StatusCode.NOT_FOUND),
                                               ("escape", grpc.StatusCode.NOT_FOUND)])
def test_dataset_names_stay_inside_the_repository(auditing, dataset, code):
    with pytest.raises(grpc.RpcError) as info:
        list(auditing.audit.Audit(audit_request(dataset)))
    assert info.value.code() == code and info.value.details().startswith("dataset")


def audit_with(**changes) -> pb.AuditRequest:
    request = audit_request()
    for name, value in changes.items():
        if name == "options":
            request.options.update(value)
        else:
            request.ClearField(name)
            getattr(request, name).extend(value)
    return request


@pytest.mark.parametrize(("request_", "start"), [
    (audit_with(methods=["occlusion", "nope"]), "methods: unknown method 'nope'"),
    (audit_with(methods=["n" * 5000]), "methods: unknown method 'nnn"),
    (audit_with(games=["nope"]), "games: unknown game 'nope'"),
    (audit_with(options={"methods": {"occlusion": {"patch": float("nan")}}}), "options.methods.occlusion.patch: nan"),
    (audit_with(options={"cms": {"stride": float("inf")}}), "options.cms.stride: inf"),
])
def test_bad_names_and_values_name_the_request_field(auditing, request_, start):
    with pytest.raises(grpc.RpcError) as info:
        list(auditing.audit.Audit(request_))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith(start)
    assert len(info.value.details().encode()) <= 2048  # a long name is cut, in one place at least (calls.clipped)


def test_without_a_dataset_repository_audit_is_refused(client):
    client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="attribute"))
    with pytest.raises(grpc.RpcError) as info:
        list(client.audit.Audit(audit_request()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith("dataset:")


def test_white_box_maps_of_an_audit_count_their_forward_passes(audit_server):
    """Instrumented sessions bypass the batcher: the service adds the audit's white-box passes itself, and
    only those (black-box ones went through the batcher); so do the sanity check's maps (of randomised
    copies of the model, and white-box ones). Audits that differ in their method or game leave the same
    remainder (the CMS pictures) once each method's and game's reported passes are taken off."""
    server, client = audit_server
    registry = server.telemetry.registry
    remainders = []
    for method, game in (("occlusion", "confidence"), ("gradient", "confidence"), ("gradient", "sanity_check")):
        before = registry.get_sample_value("faceaudit_forward_passes_total", {"model": "attribute"}) or 0.0
        request = pb.AuditRequest(model="attribute", dataset="faces", methods=[method], games=[game])
        request.options.update({"cms": OPTIONS["cms"], "methods": {m: o for m, o in OPTIONS["methods"].items()
                                                                   if m == method},
                                "games": {"sanity_check": {"layers": 1}} if game == "sanity_check" else {}})
        summary = json_format.MessageToDict(list(client.audit.Audit(request))[-1].summary)
        counted = registry.get_sample_value("faceaudit_forward_passes_total", {"model": "attribute"}) - before
        reported = summary["methods"][method]["forward_passes"] + summary["games"][game]["forward_passes"]
        remainders.append(counted - reported)
    assert remainders[0] == remainders[1] == remainders[2] > 0


def test_map_files_go_out_in_chunks_that_reassemble(tmp_path, monkeypatch):
    from faceaudit.server import audit_service

    monkeypatch.setattr(audit_service, "CHUNK_BYTES", 1000)
    files = {"maps/cms.npy": bytes(range(256)) * 9, "maps/rows/00001/image.png": b"", "maps/x.png": b"x" * 1000}
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "skip.npz").write_bytes(b"not sent")
    chunks = list(audit_service.map_chunks(tmp_path))
    assert [c.path for c in chunks] == ["maps/cms.npy"] * 3 + ["maps/rows/00001/image.png", "maps/x.png"]
    assert all(len(c.data) <= 1000 for c in chunks) and [c.last for c in chunks] == [False, False, True, True, True]
    rebuilt: dict[str, bytes] = {}
    for chunk in chunks:
        rebuilt[chunk.path] = rebuilt.get(chunk.path, b"") + chunk.data
    assert rebuilt == files
