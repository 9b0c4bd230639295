"""Cascading randomisation: gradient maps of a random convnet decorrelate; planted structure does not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.sanity_check import SanityCheckOptions, _redraw, layers, sanity_check, untouched
from faceaudit.testing import zoo

from tests.conftest import prepared


def items(count: int, size: int = 16, classes: int = 4, seed: int = 0) -> list[GameItem]:
    rng = np.random.default_rng(seed)
    return [GameItem(image=rng.uniform(0, 255, (size, size, 3)).astype(np.float32),
                     target=ExplainTarget(class_index=i % classes)) for i in range(count)]


@pytest.fixture(scope="module")
def convnet():
    return prepared(zoo.vgg_classifier(height=16, width=16, seed=1), {"kind": "classifier"})


def test_full_randomisation_decorrelates_gradient_maps(convnet) -> None:
    points: list[GamePoint] = []
    result = sanity_check(convnet, items=items(4), options=SanityCheckOptions(methods=("gradient",)),
                          on_point=points.append)
    curve = result.curves["gradient"]["spearman"]
    assert result.x_label == "layers_randomised" and result.x == [0.0, 1.0, 2.0, 3.0]  # Gemm, Conv, Conv
    assert curve[0] == pytest.approx(1.0)  # the original maps against themselves
    assert abs(curve[-1]) < 0.25 and abs(result.curves["gradient"]["spearman_abs"][-1]) < 0.25
    assert result.summary["gradient"]["pass"] == 1.0 and result.summary["gradient"]["layers_total"] == 3
    assert [p.values["spearman"] for p in points] == curve
    assert result.forward_passes == 4 * 4  # one instrumented pass per gradient map, 4 images × 4 models
    json.dumps(result.to_dict(), allow_nan=False)


def test_structure_outside_the_weights_fails_the_check() -> None:
    """The planted classifier multiplies its input by a constant box mask (a Mul, not a layer): however
    its one Gemm is redrawn, every map stays zero outside the box, so the ranks keep the box."""
    model = prepared(zoo.planted_region_classifier(height=16, width=16, box=(4, 10, 4, 10)), {"kind": "classifier"})
    result = sanity_check(model, items=items(3, classes=3), options=SanityCheckOptions(methods="gradient"))
    assert result.x == [0.0, 1.0]
    assert result.curves["gradient"]["spearman"][-1] > 0.9
    assert result.summary["gradient"]["pass"] == 0.0


def test_layers_and_every_bound_the_cascade(convnet) -> None:
    result = sanity_check(convnet, items=items(2), options=SanityCheckOptions(layers=2, every=2, seed=3))
    assert result.x == [0.0, 2.0] and result.summary["gradient"]["layers_randomised"] == 2
    partial = sanity_check(convnet, items=items(2), options=SanityCheckOptions(layers=3, every=2, seed=3))
    assert partial.x == [0.0, 2.0, 3.0]  # the last step is always evaluated
    # the cascade is one draw sequence: step 2 is the same model whatever steps are evaluated
    assert partial.curves["gradient"]["spearman"][1] == pytest.approx(result.curves["gradient"]["spearman"][1])
    assert any("top 2 of 3" in note for note in result.notes)


def test_layers_top_first_with_their_batch_norms() -> None:
    proto = zoo.iresnet_embedding(height=16, width=16)
    found = layers(proto)
    assert [layer.op_type for layer in found] == ["Gemm", "Conv", "Conv", "Conv"]
    by_name = {t.name: t for t in proto.graph.initializer}
    for layer in found[1:]:  # Conv weight and bias, then the following BatchNormalization's scale and bias
        node = next(n for n in proto.graph.node if n.name == layer.node)
        norm = next(n for n in proto.graph.node if n.op_type == "BatchNormalization" and n.input[0] == node.output[0])
        assert layer.parameters == (node.input[1], node.input[2], norm.input[1], norm.input[2])
        assert all(name in by_name for name in layer.parameters)
    # left as trained: the PRelu slopes and the BatchNormalization running statistics
    prelu = [n.input[1] for n in proto.graph.node if n.op_type == "PRelu"]
    stats = [name for n in proto.graph.node if n.op_type == "BatchNormalization" for name in n.input[3:5]]
    assert sorted(untouched(proto, found)) == sorted(prelu + stats)


def test_redraw_keeps_shape_and_moments_and_leaves_the_rest(convnet) -> None:
    proto = zoo.vgg_classifier(height=16, width=16, seed=1)
    before = {t.name: numpy_helper.to_array(t).copy() for t in proto.graph.initializer}
    layer = layers(proto)[0]
    _redraw(proto, layer, np.random.default_rng(0))
    after = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    weight = layer.parameters[0]
    assert after[weight].shape == before[weight].shape and not np.array_equal(after[weight], before[weight])
    assert after[weight].mean() == pytest.approx(before[weight].mean(), abs=0.1 * float(before[weight].std()))
    assert after[weight].std() == pytest.approx(before[weight].std(), rel=0.1)
    for name in before.keys() - set(layer.parameters):
        assert np.array_equal(after[name], before[name])


def test_original_model_is_untouched(convnet) -> None:
    before = convnet.loaded.proto.SerializeToString()
    sanity_check(convnet, items=items(1), options=SanityCheckOptions(layers=1))
    assert convnet.loaded.proto.SerializeToString() == before


@pytest.mark.parametrize(("values", "field"), [
    ({"methods": ()}, "methods"), ({"methods": ("gradient", "nope")}, "methods"),
    ({"methods": "gradient,gradient"}, "methods"), ({"method_options": {"ebp": {}}}, "method_options"),
    ({"method_options": {"gradient": {"reduce": "median"}}}, "method_options[gradient].reduce"),
    ({"layers": 0}, "layers"), ({"every": 0}, "every"), ({"threshold": 0}, "threshold"),
    ({"threshold": 1.5}, "threshold"), ({"seed": -1}, "seed"),
])
def test_options_validated(values: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        SanityCheckOptions(**values)
    assert err.value.field == field


def test_method_names_and_options_are_canonicalised() -> None:
    options = SanityCheckOptions(methods="Guided-Backprop, gradient", method_options={"gradient": {"reduce": "sum"}})
    assert options.methods == ("guided_backprop", "gradient")
    assert options.method_options["gradient"].reduce == "sum"


def test_constant_original_map_is_refused() -> None:
    """A linear classifier with one weight for every input value has the same gradient at every pixel."""
    weights = np.full((2, 3 * 4 * 4), 0.5, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1)],
        "flat_gradient", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.zeros(2, np.float32), "b")],
    )
    model = prepared(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
                     {"kind": "classifier"})
    with pytest.raises(InvalidRequest, match="constant") as err:
        sanity_check(model, items=items(2, size=4, classes=2))
    assert err.value.field == "items[0]"


def test_failed_randomised_maps_count_as_uncorrelated() -> None:
    """Grad-CAM refuses an empty map (ModelOutputError); on a randomised model that is a result, not an error."""
    model = prepared(zoo.vgg_classifier(height=16, width=16, seed=0), {"kind": "classifier"})
    result = sanity_check(model, items=items(4), options=SanityCheckOptions(methods="gradcam"))
    assert result.summary["gradcam"]["failed_maps"] > 0
    assert any("first failure: gradcam" in note for note in result.notes)
    json.dumps(result.to_dict(), allow_nan=False)
