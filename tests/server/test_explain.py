"""Explain over gRPC against the same methods run in process: the served map must be the same map."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from faceaudit.alignment import LandmarkAligner
from faceaudit.alignment.landmarks import rescale_landmarks
from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.images.io import fit_to_model, read_image_for_model
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import METHODS, explain
from faceaudit.models import load_model, resolve_spec
from faceaudit.engine.prepare import prepare
from faceaudit.testing import zoo
from faceaudit.v1 import faceaudit_pb2 as pb

from tests.conftest import prepared
from tests.server.conftest import DEMO_MODELS, array, pixels


@pytest.fixture(scope="module")
def identity(client):
    return client.models.RegisterFromRepository(pb.RegisterFromRepositoryRequest(name="identity"))


@pytest.fixture(scope="module")
def local_identity():
    loaded = load_model(DEMO_MODELS / "identity.onnx")
    return prepare(loaded, resolve_spec(loaded))


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(7).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)


def request(model="identity", method="occlusion", images=(), targets=(), **options) -> pb.ExplainRequest:
    message = pb.ExplainRequest(model=model, method=method, images=list(images), targets=list(targets))
    message.options.update(options)
    return message


def test_served_map_equals_the_in_process_map(client, identity, local_identity, faces):
    served = client.explain.Explain(request(images=[pixels(faces[0])], targets=[pb.Target(class_index=3)],
                                            patch=8, stride=4))
    local = explain(local_identity, "occlusion", image=faces[0], target=ExplainTarget(class_index=3),
                    options={"patch": 8, "stride": 4})
    (only,) = served.maps
    np.testing.assert_array_equal(array(only.values), local.values)
    assert (only.image_index, only.target_index, only.method) == (0, 0, "occlusion")
    assert only.forward_passes == local.forward_passes
    assert only.metadata["model_sha256"] == identity.sha256 == local_identity.loaded.sha256
    assert only.metadata["options"]["patch"] == 8


def test_images_times_targets_in_image_major_order(client, identity, local_identity, faces):
    targets = [pb.Target(class_index=1), pb.Target(predicted_class=True)]
    served = client.explain.Explain(request(method="gradient", images=[pixels(f) for f in faces], targets=targets))
    assert [(m.image_index, m.target_index) for m in served.maps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for m in served.maps:
        face = faces[m.image_index]
        index = 1 if m.target_index == 0 else int(np.argmax(local_identity.session.run(
            np.stack([face.transpose(2, 0, 1) / 255.0]).astype(np.float32))[0]))
        local = explain(local_identity, "gradient", image=face, target=ExplainTarget(class_index=index))
        assert m.metadata["target"]["class_index"] == index
        np.testing.assert_array_equal(array(m.values), local.values)


def test_encoded_png_is_decoded_like_the_cli(client, identity, local_identity, faces):
    face = faces[0].round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, format="PNG")
    served = client.explain.Explain(request(method="gradient", images=[pb.Image(encoded=buffer.getvalue())],
                                            targets=[pb.Target(class_index=0)]))
    local = explain(local_identity, "gradient", image=face.astype(np.float32), target=ExplainTarget(class_index=0))
    np.testing.assert_array_equal(array(served.maps[0].values), local.values)


def test_float16_pixels_are_accepted(client, identity, local_identity, faces):
    half = faces[0].round().astype("<f2")
    image = pb.Image(pixels=pb.Tensor(dtype=pb.Tensor.FLOAT16, shape=half.shape, data=half.tobytes()))
    served = client.explain.Explain(request(method="gradient", images=[image], targets=[pb.Target(class_index=0)]))
    local = explain(local_identity, "gradient", image=half.astype(np.float32), target=ExplainTarget(class_index=0))
    np.testing.assert_array_equal(array(served.maps[0].values), local.values)


def test_stream_sends_growing_progress_then_the_map(client, identity, local_identity, faces):
    events = list(client.explain.ExplainStream(request(images=[pixels(faces[1])], targets=[pb.Target(class_index=2)],
                                                       patch=8, stride=4, chunk=16)))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "map" and kinds.count("map") == 1 and "progress" in kinds
    done = [e.progress.done for e in events if e.HasField("progress")]
    assert done == sorted(done) and events[-2].progress.done == events[-2].progress.total == events[-1].map.forward_passes
    local = explain(local_identity, "occlusion", image=faces[1], target=ExplainTarget(class_index=2),
                    options={"patch": 8, "stride": 4, "chunk": 16})
    np.testing.assert_array_equal(array(events[-1].map.values), local.values)


def test_embedding_model_is_explained_against_a_mate_pair(client):
    proto = zoo.planted_region_embedding()
    client.upload("planted_embedding", proto, {"kind": "embedding"})
    rng = np.random.default_rng(3)
    probe, mate, non_mate = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    pair = pb.Target(pair=pb.MatePair(mate=pixels(mate), non_mate=pixels(non_mate)))
    served = client.explain.Explain(request(model="planted_embedding", images=[pixels(probe)], targets=[pair],
                                            patch=4, stride=4))
    local = explain(prepared(proto, {"kind": "embedding"}), "occlusion", image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate),
                    options={"patch": 4, "stride": 4})
    assert served.maps[0].signed
    np.testing.assert_array_equal(array(served.maps[0].values), local.values)


def test_list_methods_is_the_registry(client):
    listed = {m.name: m for m in client.explain.ListMethods(pb.ListMethodsRequest()).methods}
    assert set(listed) == set(METHODS)
    assert listed["occlusion"].black_box and not listed["gradient"].black_box
    assert {"patch", "stride", "fill"} <= {o.name for o in listed["occlusion"].options}


def bad_tensor(**changes):
    tensor = pixels(np.zeros((64, 64, 3), np.float32)).pixels
    for name, value in changes.items():
        if name == "shape":
            del tensor.shape[:]
            tensor.shape.extend(value)
        else:
            setattr(tensor, name, value)
    return pb.Image(pixels=tensor)


def test_cis_of_a_pre_aligned_face_equals_the_in_process_map(client, identity, local_identity, faces):
    """Without landmarks the model-sized crop is its own canonical frame, as the CLI's default."""
    served = client.explain.Explain(request(method="cis", images=[pixels(faces[0])], targets=[pb.Target(class_index=3)],
                                            patch=16, stride=8))
    local = explain(local_identity, "cis", image=faces[0], target=ExplainTarget(class_index=3),
                    options={"patch": 16, "stride": 8})
    (only,) = served.maps
    assert only.frame == "canonical"
    np.testing.assert_array_equal(array(only.values), local.values)


def test_cis_with_landmarks_in_the_sent_images_pixels(client, identity, local_identity):
    """A 128×128 photo with its five landmarks in its own pixels: the server resizes it to the model's
    64×64 and moves the landmarks with it, as the CLI's --landmarks does."""
    photo = np.random.default_rng(3).uniform(0, 255, (128, 128, 3)).astype(np.float32)
    landmarks = arcface_for_frame((128, 128)) + np.array([2.0, -3.0])  # a little off the template
    served = client.explain.Explain(request(method="cis", images=[with_landmarks(pixels(photo), landmarks.ravel())],
                                            targets=[pb.Target(class_index=3)], patch=16, stride=8))
    image = fit_to_model(photo, local_identity.spec)
    aligner = LandmarkAligner(arcface_for_frame((64, 64)), (64, 64), margin=0.5)
    correspondence = aligner.correspond(image, rescale_landmarks(landmarks, (128, 128), (64, 64)))
    local = explain(local_identity, "cis", image=image, target=ExplainTarget(class_index=3),
                    options={"patch": 16, "stride": 8}, correspondence=correspondence)
    np.testing.assert_allclose(array(served.maps[0].values), local.values, rtol=1e-6, atol=1e-7)
    unaligned = explain(local_identity, "cis", image=image, target=ExplainTarget(class_index=3),
                        options={"patch": 16, "stride": 8})
    assert not np.allclose(local.values, unaligned.values)  # the landmarks were used


FIVE_POINTS = arcface_for_frame((64, 64))  # landmarks of a 64×64 face in ArcFace's layout


def with_landmarks(image: pb.Image, values) -> pb.Image:
    image.landmarks.extend(values)
    return image


@pytest.mark.parametrize(("make", "field"), [
    (lambda f: request(method="nope", images=[pixels(f)]), "method"),
    (lambda f: request(images=[pixels(f)], patch="big"), "patch"),
    (lambda f: request(images=[pixels(f)], colour=3), "colour"),
    (lambda f: request(images=[pixels(f)], patch=float("nan")), "options.patch"),
    (lambda f: request(images=[pixels(f)], stride=float("-inf")), "options.stride"),
    (lambda f: request(images=[]), "images"),
    (lambda f: request(images=[pb.Image()]), "images[0]"),
    (lambda f: request(images=[pixels(f), bad_tensor(dtype=pb.Tensor.DTYPE_UNSPECIFIED)]), "images[1].pixels.dtype"),
    (lambda f: request(images=[bad_tensor(shape=[64, 64, 4])]), "images[0].pixels.data"),
    (lambda f: request(images=[bad_tensor(shape=[64, 64, 4], data=bytes(64 * 64 * 16))]), "images[0].pixels"),
    (lambda f: request(images=[pb.Image(encoded=b"not a png")]), "images[0]"),
    (lambda f: request(images=[pixels(f * 2)]), "images[0].pixels"),
    (lambda f: request(images=[pixels(f)], targets=[pb.Target(class_index=20)]), "target"),
    (lambda f: request(images=[pixels(f)], targets=[pb.Target(pair=pb.MatePair(mate=pixels(f)))]), "targets[0]"),
    (lambda f: request(images=[pixels(f)], targets=[pb.Target(predicted_class=False)]), "targets[0].predicted_class"),
    (lambda f: request(method="cis", images=[with_landmarks(pixels(f), [10.0] * 7)]), "images[0].landmarks"),
    (lambda f: request(method="cis", images=[with_landmarks(pixels(f), [30.0, 30.0] * 5)]), "images[0].landmarks"),
    (lambda f: request(images=[with_landmarks(pixels(f), FIVE_POINTS.ravel())]), "images[0].landmarks"),
    # A grid every 40 px (pixels 11 and 51 of the 64×64 frame) steps over the face the landmarks cover.
    (lambda f: request(method="cis", images=[with_landmarks(pixels(f), FIVE_POINTS.ravel())], stride=40), "stride"),
    (lambda f: request(images=[pixels(f)], targets=[pb.Target(pair=pb.MatePair(mate=with_landmarks(pixels(f), [5.0])))]),
     "targets[0].pair.mate.landmarks"),
])
def test_bad_requests_name_the_field_and_the_server_keeps_serving(client, identity, faces, make, field):
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(make(faces[0]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}:"), info.value.details()
    assert client.models.Get(pb.GetModelRequest(model="identity")).name == "identity"


def test_a_stream_refuses_non_finite_options_naming_them(client, identity, faces):
    with pytest.raises(grpc.RpcError) as info:
        list(client.explain.ExplainStream(request(images=[pixels(faces[0])], patch=float("inf"))))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("options.patch: inf is not a valid value")


def test_landmarks_outside_the_sent_image_are_named_in_its_own_frame(client, identity):
    photo = np.random.default_rng(3).uniform(0, 255, (128, 128, 3)).astype(np.float32)
    points = arcface_for_frame((128, 128))
    points[0] = [130.0, 40.0]
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(method="cis", images=[with_landmarks(pixels(photo), points.ravel())],
                                       targets=[pb.Target(class_index=3)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("images[0].landmarks: point 0 at (130, 40) lies outside the 128x128 image")
    points = arcface_for_frame((128, 128))
    points[1, 0] = 127.5  # the right eye on the last pixel's far edge: inside, whatever rounding the resize brings
    served = client.explain.Explain(request(method="cis", images=[with_landmarks(pixels(photo), points.ravel())],
                                            targets=[pb.Target(class_index=3)], patch=16, stride=16))
    assert served.maps[0].frame == "canonical"


def test_a_face_too_small_once_rescaled_is_refused_naming_the_sent_images_frame(client, identity):
    # About 13 x 15 px in a 640 px photo: enough there, under 2 px in the 64 x 64 image the model takes.
    buffer = io.BytesIO()
    Image.new("RGB", (640, 640), (120, 110, 100)).save(buffer, "PNG")
    points = 300 + arcface_for_frame((40, 40))
    message = pb.Image(encoded=buffer.getvalue())
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(method="cis", images=[with_landmarks(message, points.ravel())],
                                       targets=[pb.Target(class_index=3)]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    span = points.max(axis=0) - points.min(axis=0)
    scaled = span * 64 / 640
    assert info.value.details().startswith(
        f"images[0].landmarks: the points span only {scaled[0]:.3g} x {scaled[1]:.3g} pixels (x by y) in the 64x64 "
        f"image the points were rescaled to from the 640x640 image they were given in ({span[0]:.3g} x "
        f"{span[1]:.3g} pixels there)"), info.value.details()


def test_unknown_model_is_not_found(client, faces):
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(model="nobody", images=[pixels(faces[0])]))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "nobody" in info.value.details()


@pytest.mark.parametrize("builder", [zoo.dynamic_quantized_classifier, zoo.qlinear_classifier])
def test_white_box_on_a_quantised_model_is_a_failed_precondition(client, builder):
    name = builder.__name__
    client.upload(name, builder(), {"kind": "classifier"})
    face = np.full((16, 16, 3), 100.0, np.float32)
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(model=name, method="gradient", images=[pixels(face)],
                                       targets=[pb.Target(class_index=0)]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "quantised" in info.value.details()
    ok = client.explain.Explain(request(model=name, images=[pixels(face)], targets=[pb.Target(class_index=0)], patch=4))
    assert array(ok.maps[0].values).shape == (16, 16)


def test_too_many_maps_are_resource_exhausted(client, identity, faces):
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(images=[pixels(faces[0])] * 65))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.details().startswith("images")


def test_image_bombs_are_refused_and_large_images_are_explained_from_their_shrunk_decoding(client, identity, faces,
                                                                                        local_identity):
    """A small PNG declaring 5000² pixels is refused before decoding (request images: at most 4096²);
    a large photo is shrunk in 8 bits while decoded and explained like the same image read by the CLI."""
    def png(array: np.ndarray) -> pb.Image:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return pb.Image(encoded=buffer.getvalue())

    bomb = png(np.zeros((5000, 5000), np.uint8))
    assert len(bomb.encoded) < 100_000
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(images=[bomb], targets=[pb.Target(class_index=0)]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.details().startswith("images[0]")
    large = np.asarray(Image.fromarray(faces[0].clip(0, 255).astype(np.uint8)).resize((640, 640), Image.BILINEAR))
    served = client.explain.Explain(request(images=[png(large)], targets=[pb.Target(class_index=0)], patch=16,
                                            stride=16))
    buffer = io.BytesIO()
    Image.fromarray(large).save(buffer, format="PNG")
    local = explain(local_identity, "occlusion", image=read_image_for_model(buffer.getvalue(), local_identity.spec)[0],
                    target=ExplainTarget(class_index=0), options={"patch": 16, "stride": 16})
    np.testing.assert_allclose(array(served.maps[0].values), local.values, rtol=1e-6, atol=1e-7)


def test_an_unexpected_error_is_internal_and_the_server_keeps_serving(client, identity, faces, monkeypatch):
    import faceaudit.server.explain_service as service

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "explain", broken)
    with pytest.raises(grpc.RpcError) as info:
        client.explain.Explain(request(images=[pixels(faces[0])], targets=[pb.Target(class_index=0)]))
    assert info.value.code() == grpc.StatusCode.INTERNAL and "a bug" not in info.value.details()
    monkeypatch.undo()
    assert len(client.explain.Explain(request(method="gradient", images=[pixels(faces[0])])).maps) == 1


def test_inference_time_of_a_call_is_observed(server, client, identity, faces):
    registry = server.telemetry.registry
    before = registry.get_sample_value("faceaudit_phase_seconds_count", {"phase": "inference"})
    client.explain.Explain(request(images=[pixels(faces[0])], targets=[pb.Target(class_index=0)], patch=16, stride=16))
    assert registry.get_sample_value("faceaudit_phase_seconds_count", {"phase": "inference"}) == before + 1
