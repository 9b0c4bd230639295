"""DeepLIFT (rescale): summation-to-delta against onnxruntime's own scores, closed forms by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.deeplift import DeepLiftOptions, deeplift
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.whitebox import nets
from tests.whitebox.numerics import session


def _logits(proto: onnx.ModelProto, images: np.ndarray, height: int, width: int) -> np.ndarray:
    run = session(proto)
    x = (np.asarray(images, dtype=np.float32) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)
    return run.run(None, {run.get_inputs()[0].name: x})[0].astype(np.float64)


@pytest.mark.parametrize("name", ["vgg", "conv_net"])
def test_summation_to_delta_with_relu_prelu_clip_maxpool_and_residual_sums(name):
    if name == "vgg":
        proto, size, spec = zoo.vgg_classifier(height=16, width=16), (16, 16), {"kind": "classifier"}
    else:  # PRelu, LeakyRelu, Clip, MaxPool with ceil_mode, a residual Add, BatchNormalization
        proto, size, spec = nets.conv_net(), (9, 10), {"kind": "classifier", "input_name": "x", "output_name": "y"}
    model = prepared(proto, {**spec, "softmax": False})
    image = np.random.default_rng(0).uniform(0, 255, (*size, 3)).astype(np.float32)
    reference = np.full_like(image, 60.0)
    logits = _logits(proto, np.stack([image, reference]), *size)
    for k in range(3):
        result = deeplift(model, image=image, target=ExplainTarget(class_index=k),
                          options=DeepLiftOptions(fill="constant", constant=(60.0,)))
        difference = logits[0, k] - logits[1, k]
        assert float(result.values.sum()) == pytest.approx(difference, rel=1e-4, abs=1e-6)
        assert result.extra["summation_to_delta"]["score_difference"] == pytest.approx(difference, rel=1e-4, abs=1e-6)


def test_one_relu_neuron_by_hand():
    """y = relu(w·x + b): C_i = Δx_i w_i · (y − y₀) / (z − z₀)."""
    n = nets.Net(5)
    n.op("Relu", [n.op("Gemm", [n.op("Flatten", ["x"], axis=1), n.normal(1, 12), n.normal(1, scale=0.5)], transB=1)])
    proto = n.model(["N", 3, 2, 2], 1)
    w = onnx.numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)[0]
    b = float(onnx.numpy_helper.to_array(proto.graph.initializer[1])[0])
    model = prepared(proto, {"kind": "classifier", "input_name": "x", "output_name": "y", "softmax": False})
    rng = np.random.default_rng(6)
    for _ in range(5):
        image = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
        x = (image / 255.0).transpose(2, 0, 1).reshape(-1).astype(np.float64)
        z, z0 = w @ x + b, b  # the black reference: x₀ = 0
        y, y0 = max(z, 0.0), max(z0, 0.0)
        factor = (y - y0) / (z - z0)
        expected = (x * w * factor).reshape(3, 2, 2).sum(axis=0)
        result = deeplift(model, image=image, target=ExplainTarget(class_index=0))
        np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-7)  # the model runs in float32


def test_linear_model_contributions_are_delta_times_weight():
    model = prepared(zoo.linear_classifier(height=4, width=4), {"kind": "classifier", "softmax": False})
    w = onnx.numpy_helper.to_array(next(t for t in model.loaded.proto.graph.initializer if t.name == "W"))
    image = np.random.default_rng(7).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    result = deeplift(model, image=image, target=ExplainTarget(class_index=2), options=DeepLiftOptions(fill="blur"))
    blurred = DeepLiftOptions(fill="blur").baseline(image)
    delta = ((image - blurred) / 255.0).transpose(2, 0, 1).reshape(-1)
    expected = (delta * w[2].astype(np.float64)).reshape(3, 4, 4).sum(axis=0)
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-7)


def test_embedding_pairs_are_explained_with_the_cosine_head():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    probe, mate, non_mate = np.random.default_rng(8).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    both = deeplift(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate))
    alone = deeplift(model, image=probe, target=ExplainTarget(mate=mate))
    assert both.signed and not np.allclose(both.values, alone.values)
