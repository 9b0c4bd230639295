"""PairwiseSIM: cells sum to the cosine; closed form on a pooling-only embedder; refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.engine.scorer import embed
from faceaudit.errors import InvalidRequest, UnsupportedModel
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.pairwise_sim import PairwiseSimOptions, pairwise_sim
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.whitebox import nets
from tests.whitebox.numerics import session


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("normalize", [False, True])
def test_cells_sum_to_the_cosine_through_an_affine_head(normalize):
    model = prepared(zoo.iresnet_embedding(normalize=normalize), {"kind": "embedding"})
    probe, mate, non_mate = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    e = embed(model, np.stack([probe, mate, non_mate])).astype(np.float64)
    alone = pairwise_sim(model, image=probe, target=ExplainTarget(mate=mate))
    both = pairwise_sim(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate))
    assert np.sum(alone.extra["cells"]) == pytest.approx(_cosine(e[0], e[1]), abs=1e-6)
    assert np.sum(both.extra["cells"]) == pytest.approx(_cosine(e[0], e[1]) - _cosine(e[0], e[2]), abs=1e-6)
    assert alone.extra["layer_size"] == [32, 32] and both.values.shape == (32, 32)


def _pooling_embedder() -> onnx.ModelProto:
    """Conv "features" (4 channels, 4×4 after stride 2) → GlobalAveragePool → Flatten: e = mean_i F(i)."""
    n = nets.Net(0)
    n.op("Conv", ["x", n.normal(4, 3, 3, 3)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    n.nodes[-1].output[0] = "features"
    n.op("Flatten", [n.op("GlobalAveragePool", ["features"])], axis=1)
    return n.model(["N", 3, 8, 8], 4)


def test_closed_form_without_a_head():
    """S(i) = F_p(i)·ē_m / (h·w·‖ē_p‖·‖ē_m‖) with ē the mean feature vectors (Stylianou et al. §3)."""
    proto = _pooling_embedder()
    model = prepared(proto, {"kind": "embedding", "input_name": "x", "output_name": "y"})
    probe, mate = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    exposed.graph.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 4, 4, 4]))
    x = (np.stack([probe, mate]) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)
    f = session(exposed).run(["features"], {"x": x})[0].astype(np.float64).reshape(2, 4, 16)
    e = f.mean(axis=2)
    expected = (f[0].T @ e[1]) / (16 * np.linalg.norm(e[0]) * np.linalg.norm(e[1]))
    result = pairwise_sim(model, image=probe, target=ExplainTarget(mate=mate))
    np.testing.assert_allclose(np.ravel(result.extra["cells"]), expected, rtol=1e-5, atol=1e-8)
    assert result.extra["layer"] == "features"


def _torch_normalized_embedder(axis: int) -> onnx.ModelProto:
    """The pooling embedder, then F.normalize as torch exports it at opset 18: x / Expand(Clip(ReduceL2(x)))."""
    n = nets.Net(0)
    n.op("Conv", ["x", n.normal(4, 3, 3, 3)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    n.nodes[-1].output[0] = "features"
    e = n.op("Flatten", [n.op("GlobalAveragePool", ["features"])], axis=1)
    norm = n.op("Clip", [n.op("ReduceL2", [e, n.ints([axis])], keepdims=1), n.const(1e-12)])
    n.op("Div", [e, n.op("Expand", [norm, n.op("Shape", [e])])])
    return n.model(["N", 3, 8, 8], 4, opset=18)


def test_torch_normalize_is_skipped_like_lp_normalization():
    """A head ending in F.normalize is still affine up to the normalisation the cosine ignores."""
    model = prepared(_torch_normalized_embedder(axis=1), {"kind": "embedding", "input_name": "x", "output_name": "y"})
    probe, mate = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    e = embed(model, np.stack([probe, mate])).astype(np.float64)
    result = pairwise_sim(model, image=probe, target=ExplainTarget(mate=mate))
    assert np.sum(result.extra["cells"]) == pytest.approx(_cosine(e[0], e[1]), abs=1e-6)
    across_batch = prepared(_torch_normalized_embedder(axis=0), {"kind": "embedding", "input_name": "x",
                                                                "output_name": "y"})
    with pytest.raises(UnsupportedModel):  # a norm over the batch is no per-image normalisation
        pairwise_sim(across_batch, image=probe, target=ExplainTarget(mate=mate))


def test_models_without_the_decomposition_are_refused():
    no_pool = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    faces = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(UnsupportedModel, match="global average pooling"):
        pairwise_sim(no_pool, image=faces[0], target=ExplainTarget(mate=faces[1]))
    proto = _pooling_embedder()
    proto.graph.node.append(onnx.helper.make_node("Relu", ["y"], ["z"]))  # a non-affine head after the pooling
    proto.graph.output[0].name = "z"
    model = prepared(proto, {"kind": "embedding", "input_name": "x", "output_name": "z"})
    probe, mate = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    assert (embed(model, np.stack([probe, mate])) == 0).any()  # the Relu clips here: the head is not affine
    with pytest.raises(UnsupportedModel, match="not affine"):
        pairwise_sim(model, image=probe, target=ExplainTarget(mate=mate))
    with pytest.raises(InvalidRequest) as info:
        PairwiseSimOptions(layer="conv_3")
    assert info.value.field == "layer"
