"""Grad-CAM++ and Score-CAM against hand computation on a one-convolution CAM network."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradcam_plus_plus import GradCamPlusPlusOptions, gradcam_plus_plus
from faceaudit.methods.scorecam import ScoreCamOptions, scorecam
from faceaudit.testing import zoo
from faceaudit.whitebox.maps import upsample_bilinear

from tests.conftest import prepared
from tests.whitebox import nets
from tests.whitebox.numerics import session

SPEC = {"kind": "classifier", "input_name": "x", "output_name": "y", "softmax": False}


def _features(proto: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 5, 4, 4]))
    return session(exposed).run(["features"], {"x": _model_input(image)})[0][0].astype(np.float64)


def _model_input(images: np.ndarray) -> np.ndarray:
    """The assumed spec's preprocessing, written out: pixels / 255, NCHW."""
    images = np.asarray(images, dtype=np.float32).reshape(-1, *np.shape(images)[-3:])
    return (images / 255.0).transpose(0, 3, 1, 2).astype(np.float32)


def _weights(proto: onnx.ModelProto) -> np.ndarray:
    return onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "W")).astype(np.float64)


def test_gradcam_plus_plus_closed_form():
    """z_k = Σ_c W_kc · mean(A_c): g_c = W_kc/16 everywhere, so α_c = g²/(2g² + S_c g³) (S_c = Σ A_c) and
    w_c = 16 · α_c · relu(g_c); L = relu(Σ_c w_c A_c)."""
    proto = nets.cam_classifier()
    model = prepared(proto, SPEC)
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    features = _features(proto, image)
    w = _weights(proto)
    checked = 0
    for k in range(3):
        g = w[k] / 16.0
        sums = features.sum(axis=(1, 2))
        denominator = 2 * g**2 + sums * g**3
        alpha = np.where(denominator != 0, g**2 / np.where(denominator != 0, denominator, 1), 0.0)
        weights = 16.0 * alpha * np.maximum(g, 0.0)
        cam = np.maximum(np.tensordot(weights, features, axes=1), 0.0)
        if not cam.max() > 0:
            continue
        result = gradcam_plus_plus(model, image=image, target=ExplainTarget(class_index=k))
        np.testing.assert_allclose(result.values, upsample_bilinear(cam, (8, 8)), rtol=1e-5, atol=1e-9)
        assert result.extra["layer"] == "features"
        checked += 1
    assert checked >= 2


def test_gradcam_plus_plus_ignores_the_softmax_of_the_spec():
    """The paper differentiates exp(logit): a softmax spec changes the score, not Grad-CAM++'s map."""
    proto = nets.cam_classifier()
    image = np.random.default_rng(1).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    maps = [gradcam_plus_plus(prepared(proto, {**SPEC, "softmax": softmax}), image=image,
                              target=ExplainTarget(class_index=1)).values for softmax in (False, True)]
    np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.parametrize("softmax", [False, True])
def test_scorecam_by_hand(softmax):
    proto = nets.cam_classifier()
    model = prepared(proto, {**SPEC, "softmax": softmax})
    image = np.random.default_rng(2).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    features = _features(proto, image)
    upsampled = np.stack([upsample_bilinear(a, (8, 8)) for a in features])
    run = session(proto)
    for k in range(3):
        total = np.zeros((8, 8))
        for a in upsampled:
            if a.max() == a.min():
                continue
            mask = (a - a.min()) / (a.max() - a.min())
            logits = run.run(None, {"x": _model_input(image * mask[..., None])})[0][0].astype(np.float64)
            score = np.exp(logits - logits.max())[k] / np.exp(logits - logits.max()).sum() if softmax else logits[k]
            total += score * a
        expected = np.maximum(total, 0.0)
        result = scorecam(model, image=image, target=ExplainTarget(class_index=k))
        np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6)
        assert result.forward_passes == 1 + result.extra["masks"]


def test_scorecam_embedding_and_options():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    probe, mate, non_mate = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    alone = scorecam(model, image=probe, target=ExplainTarget(mate=mate), options=ScoreCamOptions(chunk=7))
    both = scorecam(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate))
    assert alone.values.shape == (32, 32) and not np.allclose(alone.values, both.values)
    for options, name in ((dict(layer=""), "layer"), (dict(chunk=0), "chunk"), (dict(fill="sky"), "fill")):
        with pytest.raises(InvalidRequest) as info:
            ScoreCamOptions(**options)
        assert info.value.field == name
    with pytest.raises(InvalidRequest) as info:
        GradCamPlusPlusOptions(layer="")
    assert info.value.field == "layer"
