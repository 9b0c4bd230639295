"""Per-layer verification accuracy against values computed by hand on pairs of known cosine similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from faceaudit.demo import FaceParams, render, sample_identity, sample_nuisance
from faceaudit.engine.prepare import prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest
from faceaudit.metrics.common import GamePoint
from faceaudit.metrics.layer_verification import LayerVerificationOptions, best_threshold, layer_verification
from faceaudit.models import load_model, resolve_spec
from tests.conftest import prepared

DEMO_MODELS = Path(__file__).resolve().parents[2] / "service" / "faceaudit" / "demo" / "models"

SPEC = {"kind": "embedding", "scale": 1.0}
# Pair k = images 2k, 2k+1, flat colours 100·(cos θ, sin θ, 0): their mean-pooled features have cosine cos(θa − θb).
ANGLES = [(10, 10), (0, 10), (50, 80), (70, 90), (0, 60), (20, 65), (5, 85), (40, 65)]
GENUINE = np.array([True, True, False, True, False, True, False, False])
# Similarities 1, cos10°, cos30°, cos20°, cos60°, cos45°, cos80°, cos25°.


def colour_net() -> onnx.ModelProto:
    """gap = GlobalAveragePool(input) (the mean colour), out = Flatten(gap)."""
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["out"], axis=1)]
    graph = helper.make_graph(
        nodes, "colour", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def pair_images() -> np.ndarray:
    theta = np.radians(np.array(ANGLES, dtype=np.float64).reshape(-1))
    colours = 100.0 * np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], axis=1)
    return np.broadcast_to(colours[:, None, None, :], (len(colours), 4, 4, 3)).astype(np.float32)


PAIRS = np.arange(16).reshape(8, 2)


def run(**options: object) -> object:
    return layer_verification(prepared(colour_net(), SPEC), images=pair_images(), pairs=PAIRS, genuine=GENUINE,
                              options=LayerVerificationOptions(**options))  # type: ignore[arg-type]


def test_best_threshold_accuracy_on_all_pairs_matches_hand_computation() -> None:
    # Sorted: .17 I, .5 I, .71 G, .87 I, .91 I, .94 G, .98 G, 1 G: best cut between cos25° and cos20°, 7 of 8 right.
    result = run(folds=1, layers=("gap", "out"))
    assert result.options["layers"] == ["gap", "out"]
    for name in ("gap", "out"):
        assert result.summary[name]["accuracy"] == pytest.approx(7 / 8)
        assert result.summary[name]["threshold"] == pytest.approx((np.cos(np.radians(25)) + np.cos(np.radians(20))) / 2)
        # Genuine above impostor in 4 + 4 + 4 + 2 of 16 combinations.
        assert result.summary[name]["auc"] == pytest.approx(14 / 16)


def test_cross_validated_accuracy_matches_hand_computation() -> None:
    # Fold A = pairs 0-3, fold B = 4-7. Fitted on B, t = (cos60° + cos45°)/2: A scores 3/4 (cos30° impostor
    # called genuine). Fitted on A, t = (cos30° + cos20°)/2 ≈ .903: B scores 2/4 (cos45° genuine missed,
    # cos25° ≈ .906 impostor accepted). Mean 5/8, std 1/8.
    result = run(folds=2, layers=("gap",))
    assert result.summary["gap"]["accuracy"] == pytest.approx(0.625)
    assert result.summary["gap"]["accuracy_std"] == pytest.approx(0.125)
    assert result.curves["verification"]["accuracy"] == [pytest.approx(0.625)]
    assert result.forward_passes == 16


def test_points_stream_one_per_layer_with_the_curve_values() -> None:
    points: list[GamePoint] = []
    result = layer_verification(prepared(colour_net(), SPEC), images=pair_images(), pairs=PAIRS, genuine=GENUINE,
                                options=LayerVerificationOptions(folds=4), on_point=points.append)
    assert [p.index for p in points] == list(range(len(result.x))) and len(points) == len(result.options["layers"])
    assert [p.values["accuracy"] for p in points] == result.curves["verification"]["accuracy"]
    assert result.summary["verification"]["best_accuracy"] == max(result.curves["verification"]["accuracy"])


def test_best_threshold_breaks_ties_towards_the_lowest() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    same = np.array([False, True, False, True])
    # The cut at .15 (only .3 wrong) and the cut at .35 (only .2 wrong) tie with 3 of 4 right.
    assert best_threshold(scores, same) == pytest.approx(0.15)
    assert best_threshold(np.array([0.5, 0.5]), np.array([True, True])) == 0.5  # all genuine, at the lowest score
    assert best_threshold(np.array([0.5, 0.7]), np.array([False, False])) == np.nextafter(0.7, 1.0)  # all impostor


@pytest.mark.parametrize(("options", "field"), [
    ({"folds": 0}, "folds"), ({"folds": 101}, "folds"), ({"folds": 2.5}, "folds"), ({"pooling": "sum"}, "pooling"),
    ({"layers": ("a", "a")}, "layers"), ({"layers": "gap"}, "layers"),
])
def test_options_are_validated_naming_the_option(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        LayerVerificationOptions(**options)  # type: ignore[arg-type]
    assert err.value.field == field


@pytest.mark.parametrize(("inputs", "field"), [
    ({"pairs": np.array([[0, 16]])}, "pairs"), ({"pairs": np.zeros((3, 3), int)}, "pairs"),
    ({"pairs": np.array([[0.0, 1.0]])}, "pairs"), ({"genuine": np.ones(8, bool)}, "genuine"),
    ({"genuine": GENUINE[:4]}, "genuine"), ({"genuine": GENUINE.astype(int)}, "genuine"),
    ({"images": pair_images()[:, :2]}, "images[0]"), ({"images": 7}, "images"), ({"options": LayerVerificationOptions(folds=9)}, "folds"),
    ({"options": LayerVerificationOptions(layers=("missing",), folds=2)}, "layers"),
])
def test_bad_inputs_name_the_field(inputs: dict[str, object], field: str) -> None:
    kwargs: dict[str, object] = {"images": pair_images(), "pairs": PAIRS, "genuine": GENUINE,
                                 "options": LayerVerificationOptions(folds=2), **inputs}
    with pytest.raises(InvalidRequest) as err:
        layer_verification(prepared(colour_net(), SPEC), **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_demo_embedding_model_gets_more_discriminative_with_depth() -> None:
    """End to end on the bundled embedding model: 8 rendered identities, two faces each under mild nuisances."""
    loaded = load_model(DEMO_MODELS / "embedding.onnx")
    model = prepare(loaded, resolve_spec(loaded), RuntimeOptions(threads=2))
    rng = np.random.default_rng([20261125, 1])
    identities = [sample_identity(rng) for _ in range(8)]
    images = np.stack([render(FaceParams(person, sample_nuisance(rng)), 64, seed=2 * k + j).image
                       for k, person in enumerate(identities) for j in range(2)]).astype(np.float32)
    pairs = np.array([p for k in range(8) for p in [(2 * k, 2 * k + 1), (2 * k, (2 * k + 3) % 16)]])
    genuine = np.array([True, False] * 8)
    result = layer_verification(model, images=images, pairs=pairs, genuine=genuine,
                                options=LayerVerificationOptions(folds=4))
    auc = result.curves["verification"]["auc"]
    assert result.options["layers"][-1] == "embedding" and len(auc) == 5
    assert auc[-1] >= 0.9 and auc[-1] > auc[0]
    assert all(0.0 <= a <= 1.0 for a in result.curves["verification"]["accuracy"])
