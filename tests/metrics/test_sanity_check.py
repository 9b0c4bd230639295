"""Cascading randomisation: gradient maps of a random convnet decorrelate; planted structure does not;
the similarities of a linear classifier, whose gradient is its weight row, equal ones computed here."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

import faceaudit.metrics.sanity_check as sanity_module
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradient import GradientOptions
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.sanity_check import (
    SanityCheckOptions, _redraw, layers, normalised_ssim, sanity_check, untouched,
)
from faceaudit.testing import zoo
from faceaudit.testing.zoo import IR_VERSION, OPSET

from tests.conftest import prepared


def items(count: int, size: int = 16, classes: int = 4, seed: int = 0) -> list[GameItem]:
    rng = np.random.default_rng(seed)
    return [GameItem(image=rng.uniform(0, 255, (size, size, 3)).astype(np.float32),
                     target=ExplainTarget(class_index=i % classes)) for i in range(count)]


def dense_classifier(size: int, widths: list[int], seed: int = 0, weights: np.ndarray | None = None) -> onnx.ModelProto:
    """Flatten then one Gemm per width (linear: no unit can die): input (N, 3, size, size) → logits.
    Each layer lists its bias before its weight among the initializers (the redraw follows that order)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Flatten", ["input"], ["h0"], axis=1)]
    initializers, fan_in = [], 3 * size * size
    for i, width in enumerate(widths):
        w = weights if weights is not None else rng.normal(0.0, 1.0, (width, fan_in))
        initializers += [numpy_helper.from_array(rng.normal(0.0, 1.0, width).astype(np.float32), f"b{i}"),
                         numpy_helper.from_array(np.asarray(w, np.float32), f"W{i}")]
        out = "logits" if i == len(widths) - 1 else f"h{i + 1}"
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"W{i}", f"b{i}"], [out], name=f"gemm{i}", transB=1))
        fan_in = width
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", widths[-1]])], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


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
    assert [p.values["ssim"] for p in points] == result.curves["gradient"]["ssim"]
    assert result.curves["gradient"]["ssim"][0] == pytest.approx(1.0) and abs(result.curves["gradient"]["ssim"][-1]) < 0.25
    assert result.forward_passes == 4 * 4  # one instrumented pass per gradient map, 4 images × 4 models
    json.dumps(result.to_dict(), allow_nan=False)


def test_signed_maps_give_two_series_and_unsigned_maps_one(convnet) -> None:
    """reduce=sum (the default) checks Σ_c ∂s/∂I_c, whose sign matters: its |map| series differs. With
    max_abs the maps are ≥ 0 and the series coincide; the result records which reduction ran."""
    signed = sanity_check(convnet, items=items(2), options=SanityCheckOptions(layers=1))
    unsigned = sanity_check(convnet, items=items(2), options=SanityCheckOptions(layers=1, reduce="max_abs"))
    assert signed.curves["gradient"]["spearman"][1] != pytest.approx(signed.curves["gradient"]["spearman_abs"][1])
    assert unsigned.curves["gradient"]["spearman"] == unsigned.curves["gradient"]["spearman_abs"]
    assert signed.options["method_options"]["gradient"]["reduce"] == "sum"
    assert unsigned.options["method_options"]["gradient"]["reduce"] == "max_abs"
    assert any("gradient: colour channels reduced by sum (Σ_c, signed), signed maps" in n for n in signed.notes)
    assert any("gradient: colour channels reduced by max_abs (max_c |·|), maps ≥ 0" in n for n in unsigned.notes)


@pytest.mark.parametrize("reduce", ["sum", "max_abs"])
def test_linear_classifier_similarities_equal_hand_computed_ones(reduce: str) -> None:
    """logits = W · flatten(x) + b: ∂z_k/∂I_c(y, x) = a_c W[k, c, y, x] with a_c = scale / std_c, whatever
    the image. The game redraws b, then W (their initializer order), from N(mean, std) of each tensor
    with numpy Generator(seed); the same draws here give the randomised map, and scipy and skimage the
    similarities, averaged over the two classes the items ask for."""
    size, classes, seed, std = 7, 2, 5, np.array([0.5, 1.0, 2.0])
    proto = dense_classifier(size, [classes], seed=3)
    model = prepared(proto, {"kind": "classifier", "std": std.tolist()})
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    rng = np.random.default_rng(seed)
    for name in ("b0", "W0"):
        values = weights[name]
        drawn = rng.normal(float(values.mean()), float(values.std()), values.shape).astype(values.dtype)
        if name == "W0":
            redrawn = drawn
    a = (1.0 / 255.0) / std

    def gradient_map(w: np.ndarray, k: int) -> np.ndarray:
        per_channel = a[:, None, None] * w[k].astype(np.float64).reshape(3, size, size)
        return per_channel.sum(axis=0) if reduce == "sum" else np.abs(per_channel).max(axis=0)

    expected = {"spearman": [], "spearman_abs": [], "ssim": []}
    for k in range(classes):
        before, after = gradient_map(weights["W0"], k), gradient_map(redrawn, k)
        expected["spearman"].append(spearmanr(before.ravel(), after.ravel()).statistic)
        expected["spearman_abs"].append(spearmanr(np.abs(before).ravel(), np.abs(after).ravel()).statistic)
        unit = [(m - m.min()) / (m.max() - m.min()) for m in (before, after)]
        expected["ssim"].append(structural_similarity(*unit, data_range=1.0, win_size=7))
    result = sanity_check(model, items=items(2, size=size, classes=classes),
                          options=SanityCheckOptions(seed=seed, reduce=reduce))
    curves = result.curves["gradient"]
    assert result.x == [0.0, 1.0]
    assert curves["spearman"][1] == pytest.approx(np.mean(expected["spearman"]), abs=1e-12)
    assert curves["spearman_abs"][1] == pytest.approx(np.mean(expected["spearman_abs"]), abs=1e-12)
    assert curves["ssim"][1] == pytest.approx(np.mean(expected["ssim"]), abs=1e-5)  # float32 maps
    if reduce == "sum":  # a check that could fail: the signed weight rows of this model have independent signs
        assert expected["spearman"] != pytest.approx(expected["spearman_abs"])


def test_cascade_redraws_the_layer_nearest_the_output_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Gemms: after step 1 only the second (output) Gemm's initializers differ, after step 2 all do."""
    proto = dense_classifier(4, [5, 3], seed=1)
    model = prepared(proto, {"kind": "classifier"})
    original = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    rebuilt, real = {}, sanity_module._rebuild

    def record(model, randomised, step):
        rebuilt[step] = {t.name: numpy_helper.to_array(t).copy() for t in randomised.graph.initializer}
        return real(model, randomised, step)

    monkeypatch.setattr(sanity_module, "_rebuild", record)
    result = sanity_check(model, items=items(2, size=4, classes=3))
    assert result.x == [0.0, 1.0, 2.0] and [layer.node for layer in layers(proto)] == ["gemm1", "gemm0"]
    differ = {step: sorted(n for n in original if not np.array_equal(original[n], found[n]))
              for step, found in rebuilt.items()}
    assert differ == {1: ["W1", "b1"], 2: ["W0", "W1", "b0", "b1"]}
    assert all(np.array_equal(rebuilt[2][n], rebuilt[1][n]) for n in ("W1", "b1"))  # a cascade: step 2 extends step 1


def test_normalised_ssim_equals_the_closed_form() -> None:
    """SSIM (Wang et al. 2004) of min-max normalised maps, data range 1 (C1 = 0.01², C2 = 0.03²), sample
    (co)variances over each 7×7 window (5×5 when the map is smaller), averaged over the windows that fit."""
    def closed_form(first: np.ndarray, second: np.ndarray, window: int) -> float:
        x, y = ((m - m.min()) / (m.max() - m.min()) for m in (first, second))
        values = []
        for i in range(x.shape[0] - window + 1):
            for j in range(x.shape[1] - window + 1):
                u, v = x[i:i + window, j:j + window].ravel(), y[i:i + window, j:j + window].ravel()
                cov = np.cov(u, v)  # ddof 1
                values.append((2 * u.mean() * v.mean() + 1e-4) * (2 * cov[0, 1] + 9e-4)
                              / ((u.mean() ** 2 + v.mean() ** 2 + 1e-4) * (cov[0, 0] + cov[1, 1] + 9e-4)))
        return float(np.mean(values))

    rng = np.random.default_rng(0)
    for shape, window in (((7, 7), 7), ((9, 10), 7), ((6, 6), 5), ((3, 8), 3)):
        first, second = rng.normal(size=shape), rng.normal(size=shape)
        assert normalised_ssim(first, second) == pytest.approx(closed_form(first, second, window), rel=1e-9)
    first = rng.normal(size=(8, 8))
    assert normalised_ssim(first, 3.0 * first - 2.0) == pytest.approx(1.0)  # the normalisation removes scale and shift
    assert normalised_ssim(first, np.full((8, 8), 2.0)) == 0.0 and normalised_ssim(first, None) == 0.0


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
    ({"threshold": 1.5}, "threshold"), ({"seed": -1}, "seed"), ({"reduce": "median"}, "reduce"),
    ({"method_options": {"gradient": {"reduce": "max_abs"}}}, "method_options[gradient].reduce"),
    ({"reduce": "max_abs", "method_options": {"smoothgrad": {"reduce": "sum"}}, "methods": "smoothgrad"},
     "method_options[smoothgrad].reduce"),
])
def test_options_validated(values: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        SanityCheckOptions(**values)
    assert err.value.field == field


def test_more_method_names_than_methods_are_refused_before_any_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    monkeypatch.setattr(sanity_module, "get_method", lambda name: looked_up.append(name))
    with pytest.raises(InvalidRequest, match=f"there are {len(sanity_module.METHODS)} methods") as err:
        SanityCheckOptions(methods=("gradient",) * 100_000)
    assert err.value.field == "methods" and looked_up == []


def test_method_names_and_options_are_canonicalised() -> None:
    options = SanityCheckOptions(methods="Guided-Backprop, gradient", method_options={"gradient": {"reduce": "sum"}})
    assert options.methods == ("guided_backprop", "gradient")
    assert options.method_options["gradient"].reduce == "sum"


def test_the_checks_reduction_reaches_every_reducing_method() -> None:
    """Methods with a channel reduction get the check's, options objects included (an audit hands its
    methods' options over, max_abs by default); methods without one are left as given."""
    options = SanityCheckOptions(methods="gradient,smoothgrad,gradcam",
                                 method_options={"gradient": GradientOptions(reduce="max_abs"),
                                                 "smoothgrad": {"samples": 4}})
    assert options.method_options["gradient"] == GradientOptions(reduce="sum")
    assert (options.method_options["smoothgrad"].reduce, options.method_options["smoothgrad"].samples) == ("sum", 4)
    assert "gradcam" not in options.method_options
    again = dataclasses.replace(options, methods=("gradient",), method_options={"gradient": options.method_options["gradient"]})
    assert again.method_options == {"gradient": GradientOptions(reduce="sum")}


def test_constant_original_map_is_refused() -> None:
    """A linear classifier with one weight for every input value has the same gradient at every pixel."""
    model = prepared(dense_classifier(4, [2], weights=np.full((2, 3 * 4 * 4), 0.5)), {"kind": "classifier"})
    with pytest.raises(InvalidRequest, match="constant") as err:
        sanity_check(model, items=items(2, size=4, classes=2))
    assert err.value.field == "items[0]"


def test_maps_too_small_for_ssim_are_refused() -> None:
    model = prepared(dense_classifier(2, [2]), {"kind": "classifier"})
    with pytest.raises(InvalidRequest, match="at least 3×3") as err:
        sanity_check(model, items=items(1, size=2, classes=2))
    assert err.value.field == "items[0]"


def test_failed_randomised_maps_count_as_uncorrelated() -> None:
    """Grad-CAM refuses an empty map (ModelOutputError); on a randomised model that is a result, not an error."""
    model = prepared(zoo.vgg_classifier(height=16, width=16, seed=0), {"kind": "classifier"})
    result = sanity_check(model, items=items(4), options=SanityCheckOptions(methods="gradcam"))
    assert result.summary["gradcam"]["failed_maps"] > 0
    assert any("first failure: gradcam" in note for note in result.notes)
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_raising_progress_callback_stops_a_long_map_within_one_batch(convnet) -> None:
    """A cancelled call raises from its progress callback: the game's own maps receive it per batch."""
    calls = []

    class Cancelled(Exception):
        pass

    def progress(done: int, total: int, phase: str) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise Cancelled

    options = SanityCheckOptions(methods=("smoothgrad",),
                                 method_options={"smoothgrad": {"samples": 400, "chunk": 8}})
    with pytest.raises(Cancelled):
        sanity_check(convnet, items=items(1), options=options, progress=progress)
    assert calls == [0, 0, 0]  # still inside the first map: 3 batches of 8 of its 400 samples
