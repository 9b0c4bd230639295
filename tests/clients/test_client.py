"""faceaudit_client against a real server: the maps, games and errors equal what runs in process."""

from __future__ import annotations

import io
import math
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import grpc

from faceaudit.alignment import LandmarkAligner
from faceaudit.demo import FaceParams, render, sample_identity
from faceaudit.alignment.landmarks import rescale_landmarks
from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.engine.prepare import prepare
from faceaudit.images.io import fit_to_model
from faceaudit.errors import FaceAuditError
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import explain
from faceaudit.metrics.common import GameItem
from faceaudit.metrics.registry import evaluate
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit_client import (
    AlreadyExists, Client, DeadlineExceeded, InvalidArgument, Item, NotFound, Pair, ServiceError, Unauthenticated,
    Unavailable, array_to_tensor, tensor_to_array,
)

from tests.clients.conftest import DEMO_MODELS
from tests.conftest import prepared
from tests.server.conftest import start_server


@pytest.fixture(scope="module")
def identity(client):
    return client.register_model(DEMO_MODELS / "identity.onnx", chunk_bytes=4096)  # several chunks


@pytest.fixture(scope="module")
def local_identity():
    loaded = load_model(DEMO_MODELS / "identity.onnx")
    return prepare(loaded, resolve_spec(loaded))


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(5).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)


def test_register_uploads_the_file_in_chunks_and_names_it_by_its_stem(client, identity):
    data = (DEMO_MODELS / "identity.onnx").read_bytes()
    assert identity.name == "identity" and identity.size_bytes == len(data)
    assert (identity.height, identity.width, identity.kind) == (64, 64, "classifier")
    assert client.register_model(DEMO_MODELS / "identity.onnx") == identity  # same bytes, spec, name: the same model
    with pytest.raises(AlreadyExists):  # the same bytes without the spec file next to them: another spec
        client.register_model(data, "identity")
    assert client.get_model(identity.sha256) == identity
    assert identity in client.list_models()


def test_explain_equals_the_in_process_map_exactly(client, identity, local_identity, faces):
    served = client.explain(identity, faces[0], method="occlusion", target=3, options={"patch": 8, "stride": 4})
    local = explain(local_identity, "occlusion", image=faces[0], target=ExplainTarget(class_index=3),
                    options={"patch": 8, "stride": 4})
    assert served.values.dtype == np.float32 and served.values.flags.writeable
    np.testing.assert_array_equal(served.values, local.values)
    expected = local.metadata()
    got = served.metadata()
    for meta in (expected, got):
        meta.pop("timings")
    assert got == expected  # options, target, sha256, spec with sources, seed, passes, frame, extra


def test_cis_with_landmarks_in_the_photos_pixels(client, identity, local_identity):
    photo = np.random.default_rng(4).uniform(0, 255, (96, 80, 3)).astype(np.float32)  # resized to 64×64 by the server
    landmarks = arcface_for_frame((96, 80)) + np.array([1.5, -2.0])
    served = client.explain(identity, photo, method="cis", target=3, options={"patch": 16, "stride": 8},
                            landmarks=landmarks)
    image = fit_to_model(photo, local_identity.spec)
    aligner = LandmarkAligner(arcface_for_frame((64, 64)), (64, 64), margin=0.5)
    local = explain(local_identity, "cis", image=image, target=ExplainTarget(class_index=3),
                    options={"patch": 16, "stride": 8},
                    correspondence=aligner.correspond(image, rescale_landmarks(landmarks, (96, 80), (64, 64))))
    assert served.frame == "canonical"
    np.testing.assert_allclose(served.values, local.values, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="landmarks"):
        client.explain(identity, photo, method="cis", target=3, landmarks=[1.0, 2.0, 3.0])
    with pytest.raises(InvalidArgument, match=r"images\[0\]\.landmarks: occlusion takes no landmarks"):
        client.explain(identity, photo, method="occlusion", target=3, landmarks=landmarks)


def test_encoded_image_and_float16_pixels_give_the_served_map_of_the_same_face(client, identity, faces):
    face = np.rint(faces[1]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, format="PNG")
    from_png = client.explain(identity, buffer.getvalue(), method="gradient", target=1)
    from_half = client.explain(identity, face.astype(np.float16), method="gradient", target=1)  # exact: ints < 2048
    from_pixels = client.explain(identity, face, method="gradient", target=1)
    np.testing.assert_array_equal(from_png.values, from_pixels.values)
    np.testing.assert_array_equal(from_half.values, from_pixels.values)


def test_progress_streams_every_forward_pass_and_gives_the_same_map(client, identity, faces):
    calls: list[tuple[int, int, str]] = []
    streamed = client.explain(identity, faces[0], method="occlusion", target=2, options={"patch": 16, "stride": 8},
                              progress=lambda done, total, phase: calls.append((done, total, phase)))
    unary = client.explain(identity, faces[0], method="occlusion", target=2, options={"patch": 16, "stride": 8})
    np.testing.assert_array_equal(streamed.values, unary.values)
    # (64 - 16) / 8 + 1 windows per side, plus the unoccluded face
    assert calls and calls[-1][0] == calls[-1][1] == streamed.forward_passes == 7 * 7 + 1
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_explain_all_is_image_major_and_prefixes_the_map_in_progress(client, identity, local_identity, faces):
    phases: list[str] = []
    maps = client.explain_all(identity, list(faces), method="gradient", targets=[0, 5],
                              progress=lambda done, total, phase: phases.append(phase))
    assert [m.target["class_index"] for m in maps] == [0, 5, 0, 5]
    for k, saliency in enumerate(maps):
        target = ExplainTarget(class_index=[0, 5][k % 2])
        local = explain(local_identity, "gradient", image=faces[k // 2], target=target)
        np.testing.assert_array_equal(saliency.values, local.values)
    assert phases and phases[0].startswith("map 1/4: ") and any(p.startswith("map 4/4: ") for p in phases)


def test_an_exception_in_the_progress_callback_cancels_the_call_and_propagates(client, identity, faces):
    class Stop(Exception):
        pass

    def stop(done: int, total: int, phase: str) -> None:
        raise Stop

    with pytest.raises(Stop):
        client.explain(identity, faces[0], method="occlusion", target=0, options={"patch": 4, "stride": 1},
                       progress=stop)
    assert client.get_model(identity).name == "identity"  # the server keeps serving


def test_embedding_pairs_travel_as_mate_and_non_mate(client, faces):
    info = client.register_model(DEMO_MODELS / "embedding.onnx")
    loaded = load_model(DEMO_MODELS / "embedding.onnx")
    local_model = prepare(loaded, resolve_spec(loaded))
    served = client.explain(info, faces[0], method="occlusion", target=Pair(faces[1], faces[0][::-1].copy()),
                            options={"patch": 16, "stride": 16})
    local = explain(local_model, "occlusion", image=faces[0], options={"patch": 16, "stride": 16},
                    target=ExplainTarget(mate=faces[1], non_mate=faces[0][::-1].copy()))
    np.testing.assert_array_equal(served.values, local.values)
    assert served.signed and served.target == {"mate": True, "non_mate": True}


def test_errors_carry_the_status_code_and_the_field(client, identity, faces):
    with pytest.raises(InvalidArgument) as info:
        client.explain(identity, faces[0], method="no-such-method")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.field == "method"
    assert isinstance(info.value, FaceAuditError) and str(info.value).startswith("INVALID_ARGUMENT: method: ")
    with pytest.raises(InvalidArgument) as info:
        client.explain(identity, faces[0], method="occlusion", target=0, options={"patch": -3})
    assert info.value.field == "patch"
    with pytest.raises(NotFound) as missing:
        client.get_model("never-registered")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(AlreadyExists):
        client.register_model(DEMO_MODELS / "attribute.onnx", "identity")  # other bytes under a taken name
    with pytest.raises(InvalidArgument) as streamed:  # errors of streaming calls too
        client.explain(identity, faces[0][:, :, :2], method="gradient", progress=lambda *a: None)
    assert streamed.value.field.startswith("images[0]")


def test_unregister_then_the_model_is_gone(client):
    info = client.register_model((DEMO_MODELS / "identity.onnx").read_bytes(), "doomed")
    assert client.unregister_model("doomed") == info
    with pytest.raises(NotFound):
        client.unregister_model("doomed")


def test_list_methods_and_games_describe_their_options(client):
    methods = client.list_methods()
    assert methods["occlusion"]["black_box"] and "patch" in methods["occlusion"]["options"]
    assert not methods["gradient"]["black_box"]
    games = client.list_games()
    assert "items" in games["deletion"]["inputs"] and "steps" in games["deletion"]["options"]


def test_evaluate_streams_every_point_and_returns_the_in_process_result(client):
    proto = zoo.planted_region_classifier()
    client.register_model(proto.SerializeToString(), "planted", spec={"kind": "classifier"})
    model = prepared(proto, {"kind": "classifier"})
    faces = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    maps = [np.random.default_rng(i).random((32, 32)).astype(np.float32) for i in range(2)]
    points, progress = [], []
    result = client.evaluate("planted", "deletion", options={"steps": 4},
                             items=[Item(f, target=1, maps={"mine": m}, name=str(i))
                                    for i, (f, m) in enumerate(zip(faces, maps))],
                             on_point=points.append, progress=lambda *a: progress.append(a))
    streamed = []
    local = evaluate(model, "deletion", options={"steps": 4}, on_point=streamed.append,
                     items=[GameItem(image=f, target=ExplainTarget(class_index=1), maps={"mine": m}, name=str(i))
                            for i, (f, m) in enumerate(zip(faces, maps))])
    assert [(p.series, p.index, p.x, p.values) for p in points] == \
        [(p.series, p.index, p.x, {k: float(v) for k, v in p.values.items()}) for p in streamed]
    assert result["summary"] == _whole(local.to_dict()["summary"])
    assert progress and progress[-1][0] == progress[-1][1] == local.forward_passes


def test_evaluate_correspondence_sends_the_parts_masks_and_returns_the_in_process_result(client):
    """Demo faces with the renderer's part masks (booleans, sent as FLOAT16): the served game is the
    in-process one with the parts in name order; a mask of the wrong size is named by its part and image."""
    info = client.register_model(DEMO_MODELS / "embedding.onnx")  # its spec file goes with it
    loaded = load_model(DEMO_MODELS / "embedding.onnx")
    local_model = prepare(loaded, resolve_spec(loaded))
    rng = np.random.default_rng([20261125, 3])
    faces = [render(FaceParams(sample_identity(rng)), 64, seed=k) for k in range(3)]
    images = [f.image for f in faces]  # uint8 arrays travel as FLOAT32 pixels
    parts = {name: [f.masks[name] for f in faces] for name in ("nose", "eyes")}
    points = []
    result = client.evaluate(info, "correspondence", images=images, parts=parts, options={"random_trials": 1},
                             on_point=points.append)
    local = evaluate(local_model, "correspondence", images=np.stack(images).astype(np.float32),
                     parts={"eyes": parts["eyes"], "nose": parts["nose"]}, options={"random_trials": 1})
    assert result["curves"] == _whole(local.to_dict()["curves"])
    assert result["forward_passes"] == local.forward_passes == 3 * (1 + 2 * (1 + 1))
    assert [p.series for p in points if p.index == 0] == ["eyes", "nose", "random"]
    with pytest.raises(InvalidArgument) as wrong:
        client.evaluate(info, "correspondence", images=images,
                        parts={"eyes": [parts["eyes"][0], parts["eyes"][1][:32], parts["eyes"][2]]})
    assert wrong.value.field == "parts[eyes][1]"
    with pytest.raises(TypeError, match="parts"):
        client.evaluate(info, "correspondence", images=images, parts=[("eyes", parts["eyes"])])


def test_boolean_part_masks_travel_as_float16_and_others_as_given():
    from faceaudit_client.client import _mask_tensor

    mask = np.eye(3, dtype=bool)
    tensor = _mask_tensor(mask)
    assert tensor.dtype == pb.Tensor.FLOAT16 and list(tensor.shape) == [3, 3]
    np.testing.assert_array_equal(tensor_to_array(tensor), mask.astype(np.float32))
    assert _mask_tensor(np.full((2, 2), 0.25)).dtype == pb.Tensor.FLOAT32  # 0.25 stays non-zero


def _whole(value):
    """What JSON over a Struct gives back: whole numbers as ints (NaN stays NaN, compared below)."""
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_whole(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def test_non_finite_numbers_of_results_come_back_as_floats():
    from faceaudit_client.convert import from_struct, to_struct

    back = from_struct(to_struct({"a": "nan", "b": ["inf", "-inf", 2.0, 2.5], "c": {"d": "text"}}), numbers=True)
    assert math.isnan(back["a"]) and back["b"] == [math.inf, -math.inf, 2, 2.5] and back["c"] == {"d": "text"}
    assert isinstance(back["b"][2], int)


def test_tensors_round_trip_float32_and_float16_little_endian():
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    tensor = array_to_tensor(values)
    assert tensor.data == values.astype("<f4").tobytes() and list(tensor.shape) == [2, 3]
    half = array_to_tensor(values.astype(np.float16))
    assert len(half.data) == 12 and half.data == values.astype("<f2").tobytes()
    np.testing.assert_array_equal(tensor_to_array(half), values)  # quarters are exact in float16


def test_token_is_sent_as_bearer_metadata():
    server = start_server(token="client-test-token-0123456789")
    try:
        with Client(f"127.0.0.1:{server.port}", token="client-test-token-0123456789") as good:
            assert good.list_models() == []
        with Client(f"127.0.0.1:{server.port}", token="wrong-token-0123456789") as bad, \
                pytest.raises(Unauthenticated) as info:
            bad.list_models()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and isinstance(info.value, ServiceError)
    finally:
        server.stop(0)


def test_a_deadline_stops_a_long_call_with_deadline_exceeded(client, identity, faces):
    with pytest.raises(DeadlineExceeded) as info:  # 61 × 61 windows: far longer than 50 ms
        client.explain(identity, faces[0], method="occlusion", target=0, options={"patch": 4, "stride": 1},
                       timeout=0.05)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.get_model(identity).sha256 == identity.sha256


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_root_makes_the_channel_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    server = start_server(tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    try:
        with Client(f"localhost:{server.port}", tls_root=cert, timeout=10) as secure:
            assert secure.list_models() == []
        with Client(f"localhost:{server.port}", timeout=5) as plain, pytest.raises(Unavailable):
            plain.list_models()
    finally:
        server.stop(0)
