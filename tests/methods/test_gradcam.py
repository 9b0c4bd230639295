"""Grad-CAM in closed form (a Conv, GlobalAveragePool, Gemm network is a CAM network) and its layer option."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradcam import GradCamOptions, gradcam
from faceaudit.testing import zoo
from faceaudit.whitebox.maps import upsample_bilinear

from tests.conftest import prepared
from tests.whitebox import nets
from tests.whitebox.numerics import session


def test_gradcam_closed_form_on_a_cam_network():
    """∂z_k/∂A_c(i, j) = W_kc/(h·w), so α_c = W_kc/(h·w) and L = relu(Σ_c W_kc A_c)/(h·w)."""
    proto = nets.cam_classifier()
    model = prepared(proto, {"kind": "classifier", "input_name": "x", "output_name": "y"})
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 5, 4, 4]))
    x = (image / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
    features = session(exposed).run(["features"], {"x": x})[0][0]
    w = onnx.numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "W")).astype(np.float64)
    for k in range(3):
        expected = upsample_bilinear(np.maximum(np.tensordot(w[k], features, axes=1), 0.0) / 16.0, (8, 8))
        result = gradcam(model, image=image, target=ExplainTarget(class_index=k))
        assert result.extra["layer"] == "features" and result.extra["layer_size"] == [4, 4]
        np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-7)


def test_default_layer_is_the_last_convolution():
    proto = zoo.vgg_classifier()
    model = prepared(proto, {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    result = gradcam(model, image=image, target=ExplainTarget(class_index=4))
    convs = [node.output[0] for node in proto.graph.node if node.op_type == "Conv"]
    first, last = convs[0], convs[-1]
    assert result.extra["layer"] == last and result.extra["layer_size"] == [16, 16]
    assert result.values.shape == (32, 32) and result.values.min() >= 0 and result.values.max() > 0
    earlier = gradcam(model, image=image, target=ExplainTarget(class_index=4), options=GradCamOptions(layer=first))
    assert earlier.extra["layer"] == first and earlier.extra["layer_size"] == [32, 32]
    assert not np.allclose(earlier.values, result.values)


def test_embedding_gradcam_contrasts_the_non_mate():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    alone = gradcam(model, image=image, target=ExplainTarget(mate=mate))
    both = gradcam(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate))
    assert alone.extra["layer"] == both.extra["layer"]  # the last Conv, its BatchNormalization folded in
    assert not both.signed and not np.allclose(alone.values, both.values)


def test_layers_are_validated():
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image = np.zeros((32, 32, 3), np.float32)
    target = ExplainTarget(class_index=0)
    with pytest.raises(InvalidRequest, match="no convolution") as info:
        gradcam(model, image=image, target=target)
    assert info.value.field == "layer"
    with pytest.raises(InvalidRequest, match="not a tensor between"):
        gradcam(model, image=image, target=target, options=GradCamOptions(layer="conv9"))
    flat = next(node.output[0] for node in model.loaded.proto.graph.node if node.op_type == "Flatten")
    with pytest.raises(InvalidRequest, match=r"feature map \(N, C, H, W\)"):
        gradcam(model, image=image, target=target, options=GradCamOptions(layer=flat))
    with pytest.raises(InvalidRequest):
        GradCamOptions(layer="")


def test_an_empty_grad_cam_is_an_error_not_a_blank_map():
    """vgg_greyscale, class 0: no feature map of the last convolution has positive weighted evidence."""
    import numpy as np

    from faceaudit.errors import ModelOutputError
    from faceaudit.methods.common import ExplainTarget
    from faceaudit.methods.gradcam import gradcam
    from faceaudit.testing import zoo

    from tests.conftest import prepared

    model = prepared(zoo.vgg_classifier(channels=1), {"kind": "classifier"})
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    outcomes = []
    for k in range(10):
        try:
            outcomes.append(gradcam(model, image=image, target=ExplainTarget(class_index=k)).values.max() > 0)
        except ModelOutputError as exc:
            assert "Grad-CAM" in str(exc) and "empty" in str(exc)
            outcomes.append("refused")
    assert "refused" in outcomes and all(o in (True, "refused") for o in outcomes)
