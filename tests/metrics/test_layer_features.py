"""Pooled intermediate features against numpy on hand-built nets whose every tensor is known in closed form."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.metrics import layer_features as lf
from faceaudit.metrics.layer_features import cosine_similarity, default_layers, layer_features, pool
from tests.conftest import prepared

SPEC = {"kind": "embedding", "scale": 1.0}  # the model sees the pixel values themselves
W1 = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.5]], np.float32)  # 1x1 conv: 3 → 2 channels
W2 = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]], np.float32)  # Gemm: 2 → 3


def tiny_net(size: int = 8) -> onnx.ModelProto:
    """conv(1x1, W1) → relu → maxpool 2x2 → global average pool → flatten → gemm(W2) → relu → 'out'."""
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["conv"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w2"], ["fc"], transB=1),
        helper.make_node("Relu", ["fc"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(W1.reshape(2, 3, 1, 1), "w1"), numpy_helper.from_array(W2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def numpy_tensors(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of tiny_net, computed with numpy from (B, H, W, 3) pixel images."""
    x = images.transpose(0, 3, 1, 2).astype(np.float64)
    conv = np.einsum("oc,bchw->bohw", W1, x)
    relu = np.maximum(conv, 0)
    b, c, h, w = relu.shape
    pooled = relu.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    gap = pooled.mean(axis=(2, 3))
    return {"conv": conv, "relu": relu, "pool": pooled, "gap": gap, "fc": gap @ W2.T, "out": np.maximum(gap @ W2.T, 0)}


def residual_net() -> onnx.ModelProto:
    """relu(conv a) → [conv b → relu] + skip → maxpool → 'out': the block's inner tensor is jumped by the skip."""
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["a"], ["a_relu"]),
        helper.make_node("Conv", ["a_relu", "w"], ["b"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["b"], ["b_relu"]),
        helper.make_node("Add", ["b_relu", "a_relu"], ["sum"]),
        helper.make_node("MaxPool", ["sum"], ["out"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 4, 4])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def images(faces) -> np.ndarray:  # type: ignore[no-untyped-def]
    return faces(5, 8, 8)


@pytest.mark.parametrize("pooling", ["mean", "max", "flatten"])
def test_pooled_features_equal_numpy(images: np.ndarray, pooling: str) -> None:
    model = prepared(tiny_net(), SPEC)
    extractor = layer_features(model, ("conv", "pool", "gap", "fc", "out"))
    got = extractor.run(images, pooling)
    tensors = numpy_tensors(images)
    for name, feats in zip(extractor.layers, got):
        value = tensors[name]
        if value.ndim == 4 and pooling != "flatten":
            expected = value.mean(axis=(2, 3)) if pooling == "mean" else value.max(axis=(2, 3))
        else:
            expected = value.reshape(len(value), -1)
        np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-4, err_msg=name)
    assert extractor.dims(pooling) == [g.shape[1] for g in got]


def test_default_layers_are_stage_outputs_then_dense_outputs() -> None:
    proto = tiny_net()
    # 8x8 stage ends at relu (last cut at 8x8), 4x4 at pool, 1x1 at gap; fc is read after its relu (= the output).
    assert default_layers(proto, "input", "out") == ["relu", "pool", "gap", "out"]
    assert layer_features(prepared(proto, SPEC)).layers == ("relu", "pool", "gap", "out")


def test_default_layers_skip_tensors_jumped_by_a_skip_connection() -> None:
    # b_relu lies inside the residual block: the skip from a_relu jumps it, so the 8x8 stage ends at the sum.
    assert default_layers(residual_net(), "input", "out") == ["sum", "out"]


def test_chunks_bound_memory_and_give_the_same_features(images: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    model = prepared(tiny_net(), SPEC)
    whole = layer_features(model, ("relu",)).run(images, "flatten")[0]
    monkeypatch.setattr(lf, "ACTIVATION_BYTES", 2 * 8 * 8 * 4)  # one image's relu map: one image per call
    small = lf._build(model, ("relu",))
    assert small.chunk == 1
    calls: list[int] = []
    np.testing.assert_array_equal(small.run(images, "flatten", progress=lambda d, t, p: calls.append(d))[0], whole)
    assert calls == [1, 2, 3, 4, 5]


def test_extractor_is_cached_per_layer_selection() -> None:
    model = prepared(tiny_net(), SPEC)
    assert layer_features(model, ("gap",)) is layer_features(model, ("gap",))
    assert layer_features(model, ("gap",)) is not layer_features(model, ("pool",))


def test_bad_layers_and_pooling_name_the_option() -> None:
    model = prepared(tiny_net(), SPEC)
    for layers in [("w1",), ("nope",), ("gap", "gap"), ["gap"], ("",)]:
        with pytest.raises(InvalidRequest) as err:
            layer_features(model, layers)  # type: ignore[arg-type]
        assert err.value.field == "layers"
    with pytest.raises(InvalidRequest) as err:
        pool(np.zeros((1, 2, 3, 3)), "median")
    assert err.value.field == "pooling"


def test_named_layers_are_capped() -> None:
    lf.check_layer_names(tuple(f"t{k}" for k in range(lf.MAX_LAYERS)))
    with pytest.raises(InvalidRequest, match=f"at most {lf.MAX_LAYERS}") as err:
        lf.check_layer_names(tuple(f"t{k}" for k in range(lf.MAX_LAYERS + 1)))  # distinct: no other check refuses them
    assert err.value.field == "layers"


def test_feature_budget_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = layer_features(prepared(tiny_net(), SPEC), ("relu",))
    monkeypatch.setattr(lf, "FEATURE_BYTES", 10 * 2 * 64 * 4 - 1)
    lf.check_feature_bytes(10, extractor, "mean")
    with pytest.raises(LimitExceeded, match="pooling"):
        lf.check_feature_bytes(10, extractor, "flatten")


def test_cosine_similarity_and_its_zero_vector_convention() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [-2.0, -2.0], [0.0, 0.0], [1.0, 0.0], [6.0, 8.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, -1.0, 1.0, 0.0, 1.0], atol=1e-12)
