from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.alignment import ARCFACE_112, LandmarkAligner, OnnxLandmarkAligner
from faceaudit.errors import InvalidRequest
from tests.conftest import prepared

MODEL_SIZE = 32  # the landmark model's input is 32x32
TEMPLATE = ARCFACE_112 * (64 / 112)


def landmark_model(values: np.ndarray) -> onnx.ModelProto:
    """A landmark 'detector' returning `values` (2K,) for every image: output = 0·mean(x) + values."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["mean"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "values"], ["landmarks"]),
    ]
    graph = helper.make_graph(
        nodes, "constant_landmarks",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, MODEL_SIZE, MODEL_SIZE])],
        [helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", len(values)])],
        initializer=[numpy_helper.from_array(np.float32(0.0).reshape(1), "zero"),
                     numpy_helper.from_array(np.asarray(values, np.float32), "values")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


IMAGE = np.full((80, 72, 3), 100.0, np.float32)  # (H, W): 80 x 72
EXPECTED = TEMPLATE * [72 / 64, 80 / 64] + [0.3, -1.2]  # landmarks in the image's pixels


@pytest.mark.parametrize(("units", "order", "output"), [
    ("normalized", "xy", ((EXPECTED + 0.5) / [72, 80]).ravel()),
    ("normalized", "planar", ((EXPECTED + 0.5) / [72, 80]).T.ravel()),
    ("pixels", "xy", ((EXPECTED + 0.5) * MODEL_SIZE / [72, 80] - 0.5).ravel()),
])
def test_model_landmarks_are_read_as_declared(units, order, output):
    aligner = LandmarkAligner(TEMPLATE, (64, 64))
    model = prepared(landmark_model(output), {"kind": "embedding"})
    onnx_aligner = OnnxLandmarkAligner(model, aligner, units=units, order=order)
    found = onnx_aligner.landmarks(np.stack([IMAGE, IMAGE]))
    assert found.shape == (2, 5, 2)
    np.testing.assert_allclose(found[1], EXPECTED, atol=1e-4)  # float32 model output
    input_xy, _ = onnx_aligner.correspond(IMAGE).points(4)
    expected_xy, _ = aligner.correspond(IMAGE, EXPECTED).points(4)
    np.testing.assert_allclose(input_xy, expected_xy, atol=1e-3)


def test_load_runs_the_model_through_the_engine():
    output = ((EXPECTED + 0.5) / [72, 80]).ravel()
    onnx_aligner = OnnxLandmarkAligner.load(landmark_model(output).SerializeToString(),
                                            LandmarkAligner(TEMPLATE, (64, 64)), units="normalized")
    assert onnx_aligner.model.spec.kind is None  # a landmark model is read raw: no kind needed
    np.testing.assert_allclose(onnx_aligner.landmarks(IMAGE[None])[0], EXPECTED, atol=1e-4)


@pytest.mark.parametrize(("kwargs", "values", "field"), [
    ({"units": "unknown"}, np.zeros(10), "units"),
    ({"units": "pixels", "order": "yx"}, np.zeros(10), "order"),
    ({"units": "pixels"}, np.zeros(12), "landmark_model"),
])
def test_bad_declarations_are_refused(kwargs, values, field):
    model = prepared(landmark_model(values), {"kind": "embedding"})
    with pytest.raises(InvalidRequest) as info:
        OnnxLandmarkAligner(model, LandmarkAligner(TEMPLATE, (64, 64)), **kwargs)
    assert info.value.field == field


def test_landmark_models_returning_k_by_2_are_read():
    from onnx import TensorProto, helper

    flat = landmark_model(((EXPECTED + 0.5) / [72, 80]).ravel())
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 5, 2])
    flat.graph.initializer.append(shape)
    flat.graph.node.append(helper.make_node("Reshape", [flat.graph.output[0].name, "shape"], ["points"]))
    del flat.graph.output[:]
    flat.graph.output.append(helper.make_tensor_value_info("points", TensorProto.FLOAT, ["N", 5, 2]))
    aligner = OnnxLandmarkAligner.load(flat.SerializeToString(), LandmarkAligner(TEMPLATE, (64, 64)), units="normalized")
    np.testing.assert_allclose(aligner.landmarks(IMAGE[None])[0], EXPECTED, atol=1e-4)
