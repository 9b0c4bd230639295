"""Evaluate over gRPC: the streamed points and the result equal the game played in process."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from faceaudit.demo import FaceParams, render, sample_identity
from faceaudit.engine.prepare import prepare
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import explain
from faceaudit.metrics.common import GameItem
from faceaudit.metrics.registry import GAMES, evaluate
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.conftest import prepared
from tests.server.conftest import DEMO_MODELS, pixels
from faceaudit.server.convert import array_to_tensor

BOX = (8, 16, 20, 28)  # zoo.planted_region_classifier's default box: (top, bottom, left, right)


@pytest.fixture(scope="module")
def planted(client):
    proto = zoo.planted_region_classifier()
    client.upload("planted", proto, {"kind": "classifier"})
    return prepared(proto, {"kind": "classifier"})


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(11).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)


def region() -> np.ndarray:
    mask = np.zeros((32, 32), np.float32)
    mask[BOX[0]:BOX[1], BOX[2]:BOX[3]] = 1
    return mask


def run(client, request: pb.EvaluateRequest) -> tuple[list[pb.GamePoint], dict, list[pb.Progress]]:
    events = list(client.evaluate.Evaluate(request))
    assert events[-1].HasField("result") and sum(e.HasField("result") for e in events) == 1
    points = [e.point for e in events if e.HasField("point")]
    progress = [e.progress for e in events if e.HasField("progress")]
    return points, json_format.MessageToDict(events[-1].result), progress


def test_deletion_with_server_computed_maps_equals_the_in_process_game(client, planted, faces):
    request = pb.EvaluateRequest(model="planted", game="deletion", methods=["occlusion"],
                                 items=[pb.EvaluateItem(image=pixels(f), target=pb.Target(class_index=1)) for f in faces])
    request.options.update({"steps": 8})
    points, result, progress = run(client, request)
    items = [GameItem(image=f, target=ExplainTarget(class_index=1), name=str(i), maps={
        "occlusion": explain(planted, "occlusion", image=f, target=ExplainTarget(class_index=1)).values})
        for i, f in enumerate(faces)]
    streamed = []
    local = evaluate(planted, "deletion", items=items, options={"steps": 8}, on_point=streamed.append)
    assert result["summary"] == local.to_dict()["summary"]  # doubles travel exactly
    assert [(p.series, p.index, p.x, dict(p.values)) for p in points] == \
        [(p.series, p.index, p.x, p.values) for p in streamed]
    assert {"occlusion", "random"} <= {p.series for p in points}
    assert progress and progress[-1].done == progress[-1].total == local.forward_passes


def test_pointing_game_with_client_maps_and_region(client, planted, faces):
    inside, outside = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)
    inside[10, 22] = 1.0  # inside the planted box
    outside[31, 0] = 1.0  # far from it
    items = [pb.EvaluateItem(image=pixels(f), target=pb.Target(class_index=0), region=array_to_tensor(region()),
                             maps={"inside": array_to_tensor(inside), "outside": array_to_tensor(outside)})
             for f in faces]
    request = pb.EvaluateRequest(model="planted", game="pointing_game", items=items)
    request.options.update({"tolerance_px": 0})
    _, result, _ = run(client, request)
    summary = result["summary"]
    assert summary["inside"]["hit_rate"] == 1.0 and summary["outside"]["hit_rate"] == 0.0


def test_list_games_is_the_registry(client):
    listed = {g.name: g for g in client.evaluate.ListGames(pb.ListGamesRequest()).games}
    assert set(listed) == set(GAMES)
    assert list(listed["pointing_game"].needs) == ["region"] and list(listed["deletion"].inputs) == ["items"]
    # inputs are request fields (a pair's `genuine` travels in `pairs`); needs are what items carry
    assert list(listed["layer_verification"].inputs) == ["images", "pairs"]
    assert list(listed["correspondence"].inputs) == ["images", "parts"] and not listed["correspondence"].needs


def nan_options(request: pb.EvaluateRequest) -> pb.EvaluateRequest:
    request.options.update({"steps": float("nan")})
    return request


@pytest.mark.parametrize(("make", "field"), [
    (lambda f: pb.EvaluateRequest(model="planted", game="nope"), "game"),
    (lambda f: pb.EvaluateRequest(model="planted", game="deletion"), "items"),
    (lambda f: pb.EvaluateRequest(model="planted", game="deletion", images=[pixels(f)]), "images"),
    (lambda f: pb.EvaluateRequest(model="planted", game="deletion", methods=["nope"],
                                  items=[pb.EvaluateItem(image=pixels(f))]), "methods: unknown method 'nope'"),
    (lambda f: nan_options(pb.EvaluateRequest(model="planted", game="deletion", methods=["occlusion"],
                                              items=[pb.EvaluateItem(image=pixels(f))])), "options.steps: nan"),
    (lambda f: pb.EvaluateRequest(model="planted", game="pointing_game", items=[pb.EvaluateItem(
        image=pixels(f), maps={"m": array_to_tensor(np.ones((32, 32), np.float32))},
        region=array_to_tensor(np.full((32, 32), np.nan, np.float32)))]), "items[0].region: holds NaN"),
    (lambda f: pb.EvaluateRequest(model="planted", game="deletion", methods=["cis"],
                                  items=[pb.EvaluateItem(image=pixels(f))]), "methods"),
    (lambda f: pb.EvaluateRequest(model="planted", game="deletion", items=[pb.EvaluateItem(
        image=pixels(f), maps={"m": array_to_tensor(np.zeros((5, 5), np.float32))})]), "items[0].maps[m]"),
])
def test_bad_requests_name_the_field(client, planted, faces, make, field):
    with pytest.raises(grpc.RpcError) as info:
        list(client.evaluate.Evaluate(make(faces[0])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field), info.value.details()


def test_white_box_maps_made_for_a_game_count_their_forward_passes(server, client, planted, faces):
    """Instrumented sessions bypass the batcher, so the service counts their passes itself: asking for
    gradient maps costs exactly one pass per item more than sending the same maps."""
    registry = server.telemetry.registry

    def passes() -> float:
        return registry.get_sample_value("faceaudit_forward_passes_total", {"model": "planted"}) or 0.0

    target = pb.Target(class_index=1)
    sent = pb.EvaluateRequest(model="planted", game="deletion", items=[pb.EvaluateItem(
        image=pixels(f), target=target,
        maps={"gradient": array_to_tensor(explain(planted, "gradient", image=f,
                                                  target=ExplainTarget(class_index=1)).values)}) for f in faces])
    asked = pb.EvaluateRequest(model="planted", game="deletion", methods=["gradient"],
                               items=[pb.EvaluateItem(image=pixels(f), target=target) for f in faces])
    counts = []
    for request in (sent, asked):
        request.options.update({"steps": 4})
        before = passes()
        run(client, request)
        counts.append(passes() - before)
    assert counts[1] - counts[0] == len(faces)


def forward_passes(server, model: str) -> float:
    return server.telemetry.registry.get_sample_value("faceaudit_forward_passes_total", {"model": model}) or 0.0


def test_the_sanity_checks_maps_count_their_forward_passes(server, client, planted, faces):
    """Maps of the randomised copies and white-box maps of the model run off the batcher: counted by the
    service. The planted classifier has one layer (a Gemm), so each method maps every face twice: a gradient
    map is one pass, an occlusion map with 16 px windows at stride 16 on 32×32 faces 2 × 2 + 1 passes."""
    request = pb.EvaluateRequest(model="planted", game="sanity_check", items=[
        pb.EvaluateItem(image=pixels(f), target=pb.Target(class_index=1)) for f in faces])
    request.options.update({"methods": "gradient,occlusion",
                            "method_options": {"occlusion": {"patch": 16, "stride": 16}}})
    before = forward_passes(server, "planted")
    _, result, _ = run(client, request)
    counted = forward_passes(server, "planted") - before
    assert counted == len(faces) * 2 * (1 + 5) == result["forward_passes"]


def test_layer_verification_counts_the_passes_of_its_own_session(server, client, planted, faces):
    """The layers' session is the game's own: one pass per image, none of them through the batcher."""
    request = pb.EvaluateRequest(model="planted", game="layer_verification", images=[pixels(f) for f in faces],
                                 pairs=[pb.ImagePair(first=0, second=1, genuine=True), pb.ImagePair(first=0, second=2)])
    request.options.update({"folds": 1})
    before = forward_passes(server, "planted")
    _, result, _ = run(client, request)
    assert forward_passes(server, "planted") - before == len(faces) == result["forward_passes"]


def part_masks(masks) -> pb.PartMasks:
    return pb.PartMasks(masks=[array_to_tensor(np.asarray(m, np.float32)) for m in masks])


def test_correspondence_with_the_demo_faces_part_masks_equals_the_in_process_game(client):
    """Rendered faces of 4 identities with the renderer's exact part masks, sent as pixels and masks; the
    parts are played in name order whatever order the request's map holds them in (the random baseline
    draws part by part), so the result is the in-process game's with the parts in name order."""
    client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="embedding"))
    loaded = load_model(DEMO_MODELS / "embedding.onnx")
    model = prepare(loaded, resolve_spec(loaded))
    rng = np.random.default_rng([20261125, 3])
    faces = [render(FaceParams(sample_identity(rng)), 64, seed=k) for k in range(4)]
    images = np.stack([f.image for f in faces]).astype(np.float32)
    names = ("mouth", "eyes", "nose")  # not name order
    request = pb.EvaluateRequest(model="embedding", game="correspondence", images=[pixels(im) for im in images],
                                 parts={name: part_masks([f.masks[name] for f in faces]) for name in names})
    request.options.update({"random_trials": 1})
    points, result, progress = run(client, request)
    streamed = []
    local = evaluate(model, "correspondence", images=images, options={"random_trials": 1}, on_point=streamed.append,
                     parts={name: [f.masks[name] for f in faces] for name in sorted(names)})
    assert result["curves"] == local.to_dict()["curves"] and result["summary"] == local.to_dict()["summary"]
    assert [(p.series, p.index, p.x, dict(p.values)) for p in points] == \
        [(p.series, p.index, p.x, p.values) for p in streamed]
    assert [p.series for p in points if p.index == 0] == ["eyes", "mouth", "nose", "random"]
    assert progress[-1].done == progress[-1].total == local.forward_passes == 4 * (1 + 3 * (1 + 1))


def masks_of(values: np.ndarray, count: int = 3) -> pb.PartMasks:
    return part_masks([values] * count)


def correspondence_request(faces, parts: dict[str, pb.PartMasks]) -> pb.EvaluateRequest:
    return pb.EvaluateRequest(model="planted", game="correspondence", images=[pixels(f) for f in faces], parts=parts)


EYE = region()  # any non-empty (32, 32) mask of the planted classifier's input


@pytest.mark.parametrize(("parts", "field"), [
    ({"eye": masks_of(EYE, 2)}, "parts[eye]: expected one mask per image (3)"),
    ({"eye": pb.PartMasks()}, "parts[eye]: expected one mask per image (3)"),
    ({"eye": pb.PartMasks(masks=[array_to_tensor(EYE), array_to_tensor(EYE[:16]), array_to_tensor(EYE)])},
     "parts[eye][1]: expected a (32, 32) boolean mask"),
    ({"eye": pb.PartMasks(masks=[array_to_tensor(EYE)] * 2 + [array_to_tensor(np.where(EYE > 0, np.nan, 0))])},
     "parts[eye][2]: holds NaN"),
    ({"eye": masks_of(np.full((32, 32), np.inf))}, "parts[eye][0]: holds NaN or infinite"),
    ({"eye": masks_of(np.zeros((32, 32)))}, "parts[eye][0]: the mask is empty"),
    ({"eye": pb.PartMasks(masks=[pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=[32, 32], data=b"")] * 3)},
     "parts[eye][0].data"),
    ({"": masks_of(EYE)}, "parts: part names must be non-empty"),
    ({"random": masks_of(EYE)}, "parts: part names must be non-empty text other than 'random'"),
    ({}, "parts: correspondence needs parts"),
])
def test_bad_parts_name_the_field(client, planted, faces, parts, field):
    with pytest.raises(grpc.RpcError) as info:
        list(client.evaluate.Evaluate(correspondence_request(faces, parts)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field), info.value.details()


def test_parts_are_refused_by_a_game_that_takes_none(client, planted, faces):
    request = pb.EvaluateRequest(model="planted", game="invariance", images=[pixels(f) for f in faces],
                                 parts={"eye": masks_of(EYE)})
    with pytest.raises(grpc.RpcError) as info:
        list(client.evaluate.Evaluate(request))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("parts: invariance takes no parts"), info.value.details()


def test_any_non_zero_value_marks_a_part_as_a_boolean_mask_would(client, planted, faces):
    """A mask travels as numbers: non-zero (here −3 and 0.5) is inside, exactly as True is in process."""
    graded = np.where(EYE > 0, -3.0, 0.0)
    graded[BOX[0], BOX[2]] = 0.5
    request = correspondence_request(faces, {"eye": masks_of(graded)})
    request.options.update({"random_trials": 1, "region": "mask"})
    _, result, _ = run(client, request)
    local = evaluate(planted, "correspondence", images=faces, parts={"eye": [EYE > 0] * 3},
                     options={"random_trials": 1, "region": "mask"})
    assert result["curves"] == local.to_dict()["curves"]
