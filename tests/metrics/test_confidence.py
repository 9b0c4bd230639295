"""Average drop / % increase / win % against numbers computed by hand on a linear 2×2 classifier,
and cosine-to-mate scores against onnxruntime run directly."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.confidence import ConfidenceOptions, confidence, random_map, rescale_to_mass
from faceaudit.testing import zoo

from tests.conftest import prepared

# Score of class 0 = Σ_p w_p · mean_c(I_p,c / 255): one weight per pixel of a 2×2 image.
PIXEL_WEIGHTS = np.array([[0.4, 0.1], [0.3, -0.2]])


def pixel_weighted_classifier() -> onnx.ModelProto:
    weights = np.zeros((2, 12), np.float32)
    weights[0] = np.broadcast_to(PIXEL_WEIGHTS / 3, (3, 2, 2)).reshape(-1)  # NCHW flatten: channel-major
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1)],
        "pixel_weighted", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.zeros(2, np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def linear():
    return prepared(pixel_weighted_classifier(), {"kind": "classifier"})


def grey(level: float) -> np.ndarray:
    return np.full((2, 2, 3), level, np.float32)


def item(image: np.ndarray, a: list[list[float]], b: list[list[float]]) -> GameItem:
    return GameItem(image=image, target=ExplainTarget(class_index=0),
                    maps={"a": np.array(a, np.float32), "b": np.array(b, np.float32)})


def test_hand_computed_case(linear) -> None:
    items = [
        # s = 1: H_a = [[1,0],[0,0]], H_b = [[.5,.5],[0,0]]; M(I) = 0.6, M(E_a) = 0.2, M(E_b) = 0.35: a wins.
        item(grey(255), [[5, 1], [1, 1]], [[2, 2], [0, 0]]),
        # H_a darkens the negative-weight pixel: M(E_a) = 0.8 > 0.6 (an increase); M(E_b) = 0.4: b wins.
        item(grey(255), [[0, 0], [0, 3]], [[0, 1], [1, 0]]),
        # the same map for both: M(I) = 0.3, M(E) = 0.15, drop 50 % each, the win split.
        item(grey(127.5), [[0, 0], [1, 0]], [[0, 0], [7, 0]]),
    ]
    points: list[GamePoint] = []
    calls: list[tuple[int, int, str]] = []
    result = confidence(linear, items=items, on_point=points.append, progress=lambda *c: calls.append(c))
    a, b = result.summary["a"], result.summary["b"]
    assert result.curves["a"]["original_score"] == pytest.approx([0.6, 0.6, 0.3], abs=1e-6)
    assert result.curves["a"]["explanation_score"] == pytest.approx([0.2, 0.8, 0.15], abs=1e-6)
    assert result.curves["b"]["explanation_score"] == pytest.approx([0.35, 0.4, 0.15], abs=1e-6)
    assert a["average_drop_pct"] == pytest.approx((0.4 / 0.6 + 0 + 0.5) / 3 * 100, abs=1e-4)
    assert b["average_drop_pct"] == pytest.approx((0.25 / 0.6 + 0.2 / 0.6 + 0.5) / 3 * 100, abs=1e-4)
    assert a["increase_pct"] == pytest.approx(100 / 3) and b["increase_pct"] == 0
    assert a["win_pct"] == pytest.approx(50) and b["win_pct"] == pytest.approx(50)
    assert result.curves["a"]["win"] == [1.0, 0.0, 0.5]
    assert "win_pct" not in result.summary["random"] and "average_drop_pct" in result.summary["random"]
    assert result.forward_passes == 3 * 4 and calls[-1] == (12, 12, "confidence")
    assert any("sign convention" in note for note in result.notes)
    json.dumps(result.to_dict(), allow_nan=False)
    # every streamed point is in the result
    for point in points:
        assert point.values["explanation_score"] == result.curves[point.series]["explanation_score"][point.index]
    assert {(p.series, p.index) for p in points} == {(s, i) for s in ("a", "b", "random") for i in range(3)}


def test_bool_and_int8_maps_are_read_as_their_values(linear) -> None:
    # The first hand-computed case with a = [[1, 0], [0, 0]] as booleans and b = [[127, 127], [−128,
    # −128]] as int8 (its range, 255, wraps to −1 in int8): H_a = [[1, 0], [0, 0]], H_b = [[.5, .5],
    # [0, 0]], M(E_a) = 0.2, M(E_b) = 0.35.
    maps = {"a": np.array([[True, False], [False, False]]), "b": np.array([[127, 127], [-128, -128]], np.int8)}
    result = confidence(linear, items=[GameItem(image=grey(255), target=ExplainTarget(class_index=0), maps=maps)])
    assert result.curves["a"]["explanation_score"] == pytest.approx([0.2], abs=1e-6)
    assert result.curves["b"]["explanation_score"] == pytest.approx([0.35], abs=1e-6)
    assert result.summary["b"]["average_drop_pct"] == pytest.approx(0.25 / 0.6 * 100, abs=1e-4)


def test_nonpositive_original_scores_are_left_out_of_the_drop(linear) -> None:
    black = item(grey(0), [[1, 0], [0, 0]], [[0, 1], [0, 0]])  # M(I) = 0: no relative drop
    white = item(grey(255), [[1, 0], [0, 0]], [[0, 1], [0, 0]])
    result = confidence(linear, items=[black, white])
    assert result.summary["a"]["drop_images"] == 1
    assert result.summary["a"]["average_drop_pct"] == pytest.approx(0.4 / 0.6 * 100, abs=1e-4)
    only_black = confidence(linear, items=[black])
    assert "average_drop_pct" not in only_black.summary["a"]
    assert any("left out" in note for note in only_black.notes)


def test_win_pct_sums_to_100_and_random_stays_out() -> None:
    model = prepared(zoo.vgg_classifier(height=16, width=16, softmax=True, seed=3), {"kind": "classifier"})
    rng = np.random.default_rng(0)
    items = [GameItem(image=rng.uniform(0, 255, (16, 16, 3)).astype(np.float32),
                      target=ExplainTarget(class_index=int(k)),
                      maps={name: rng.random((16, 16)) for name in ("x", "y", "z")}) for k in (0, 1, 1, 2, 0)]
    result = confidence(model, items=items, options=ConfidenceOptions(chunk=2))
    assert sum(result.summary[m]["win_pct"] for m in ("x", "y", "z")) == pytest.approx(100)
    assert set(result.summary) == {"x", "y", "z", "random"}
    # classes are scored by separate scorers: results come back in item order all the same
    alone = confidence(model, items=items[3:4])
    assert alone.curves["x"]["explanation_score"][0] == pytest.approx(result.curves["x"]["explanation_score"][3])


@pytest.mark.parametrize("chunk", [1, 2, 16])  # one mate per scorer, a short last chunk, all in one
def test_embedding_scores_are_cosines_to_the_mate(chunk: int) -> None:
    proto = zoo.planted_region_embedding(height=16, width=16, box=(2, 10, 4, 12))
    model = prepared(proto, {"kind": "embedding"})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def emb(image: np.ndarray) -> np.ndarray:
        return session.run(None, {"input": (image / 255.0).transpose(2, 0, 1)[None].astype(np.float32)})[0][0]

    def cos(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    rng = np.random.default_rng(5)
    faces = rng.uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    mates = np.clip(faces + rng.normal(0, 20, faces.shape), 0, 255).astype(np.float32)
    maps = [rng.random((16, 16)) for _ in faces]
    items = [GameItem(image=f, target=ExplainTarget(mate=m), maps={"m": h}) for f, m, h in zip(faces, mates, maps)]
    result = confidence(model, items=items, options=ConfidenceOptions(chunk=chunk))
    for i, (face, mate, h) in enumerate(zip(faces, mates, maps)):
        unit = (h - h.min()) / np.ptp(h)  # one method: s is its own mass, H = H'
        explanation = (1 - unit)[..., None] * face
        assert result.curves["m"]["original_score"][i] == pytest.approx(cos(emb(face), emb(mate)), abs=1e-5)
        assert result.curves["m"]["explanation_score"][i] == pytest.approx(cos(emb(explanation), emb(mate)), abs=1e-5)
    assert result.forward_passes == 3 * 3 + 3  # image, method, random per item; one pass per mate


def test_rescale_to_mass_equalises_and_stays_in_unit_range() -> None:
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(8, 8)), rng.random((8, 8)) ** 4, np.eye(8) * 3 - 1]
    heat, mass = rescale_to_mass(maps)
    assert mass == pytest.approx(8)  # the identity map rescales to 8 ones: the smallest mass
    for h in heat:
        assert h.sum() == pytest.approx(mass) and h.min() >= 0 and h.max() <= 1 + 1e-12
    assert heat[2] == pytest.approx(np.eye(8))  # the sparsest map is kept as rescaled


@pytest.mark.parametrize("mass", [0.5, 10.0, 60.0, 64.0])
def test_random_map_has_the_mass_in_unit_range(mass: float) -> None:
    h = random_map((8, 8), mass, np.random.default_rng(2))
    assert h.sum() == pytest.approx(mass) and h.min() >= 0 and h.max() <= 1 + 1e-12


def test_bad_input_names_the_field(linear) -> None:
    good = item(grey(255), [[1, 0], [0, 0]], [[0, 1], [0, 0]])
    with pytest.raises(InvalidRequest) as err:
        confidence(linear, items=[good, item(grey(255), [[1, 1], [1, 1]], [[0, 1], [0, 0]])])
    assert err.value.field == "items[1].maps[a]"
    with pytest.raises(InvalidRequest) as err:
        confidence(linear, items=[GameItem(image=grey(255), target=ExplainTarget(class_index=7), maps=good.maps)])
    assert err.value.field == "items[0].target"
    for name, value in (("chunk", 0), ("seed", -1), ("chunk", 1.5)):
        with pytest.raises(InvalidRequest) as err:
            ConfidenceOptions(**{name: value})
        assert err.value.field == name
    with pytest.raises(InvalidRequest) as err:
        confidence(linear, items=[good], options={"chunk": 1})
    assert err.value.field == "options"


def test_oracle_map_beats_random_and_an_off_target_map_on_a_planted_model() -> None:
    """Scores depend only on the box's pixels (non-negative weights): darkening the box lowers them."""
    box = (4, 10, 4, 10)
    model = prepared(zoo.planted_region_classifier(height=16, width=16, box=box), {"kind": "classifier"})
    oracle = np.zeros((16, 16))
    oracle[box[0]:box[1], box[2]:box[3]] = 1.0
    rng = np.random.default_rng(4)
    items = [GameItem(image=rng.uniform(0, 255, (16, 16, 3)).astype(np.float32), target=ExplainTarget(class_index=k),
                      maps={"oracle": oracle, "off_target": 1.0 - oracle}) for k in (0, 1, 2, 0)]
    result = confidence(model, items=items)
    summary = result.summary
    assert summary["oracle"]["win_pct"] == 100 and summary["off_target"]["average_drop_pct"] == pytest.approx(0)
    assert summary["oracle"]["average_drop_pct"] > summary["random"]["average_drop_pct"] > 0
    assert summary["oracle"]["increase_pct"] == 0
