"""Deletion against hand-computed curves, planted ground truth and direct onnxruntime runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, options_from
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.deletion import DeletionOptions, deletion
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.metrics.test_hiding_game import WEIGHTS, WHITE, box_map, cosines, curves_from, run_onnx, tiny_items, tiny_linear

# logit_0 = 0.2 + Σ kept W_p on a white image (W = 0.1, 0.2, 0.3, 0.4), logit_1 = 0.5
LINEAR = prepared(tiny_linear(bias=(0.2, 0.5)), {"kind": "classifier"})


def test_zero_baseline_curves_and_areas_match_the_hand_computed_ones() -> None:
    points: list[GamePoint] = []
    result = deletion(LINEAR, items=tiny_items(WHITE), options=DeletionOptions(steps=4), on_point=points.append)
    assert result.x == [0.0, 0.25, 0.5, 0.75, 1.0]
    # oracle deletes 0.4, 0.3, 0.2, 0.1 in turn
    np.testing.assert_allclose(result.curves["oracle"]["mean_score"], [1.2, 0.8, 0.5, 0.3, 0.2], atol=1e-6)
    np.testing.assert_allclose(result.curves["inverse"]["mean_score"], [1.2, 1.1, 0.9, 0.6, 0.2], atol=1e-6)
    # trapezoids of width 0.25: (1.2+0.8)/2 + (0.8+0.5)/2 + (0.5+0.3)/2 + (0.3+0.2)/2 = 2.3 → 0.575
    assert result.summary["oracle"]["auc"] == pytest.approx(0.575, abs=1e-6)
    assert result.summary["inverse"]["auc"] == pytest.approx(0.25 * (2.3 + 2.0 + 1.5 + 0.8) / 2, abs=1e-6)
    # normalised: (auc − 0.2)/(1.2 − 0.2), the all-black image scoring b = 0.2
    assert result.summary["oracle"]["auc_normalised"] == pytest.approx(0.375, abs=1e-6)
    np.testing.assert_allclose(result.curves["oracle"]["normalised_score"], [1.0, 0.6, 0.3, 0.1, 0.0], atol=1e-6)
    assert curves_from(points) == result.curves
    # 1 image: the clean and the all-deleted images once, 3 inner steps × 3 series
    assert result.forward_passes == 2 + 3 * 3


def test_blur_baseline_is_the_gaussian_blurred_image() -> None:
    image = np.zeros((2, 2, 3), np.float32)
    image[0, 0] = 255.0
    result = deletion(LINEAR, items=tiny_items(image), options=DeletionOptions(steps=4, baseline="blur", blur_sigma=1.0))
    blurred = gaussian_filter(image[..., 0].astype(np.float64), sigma=1.0, mode="nearest") / 255
    clean, floor = 0.2 + 0.1, 0.2 + float(np.sum(WEIGHTS * blurred))
    curve = result.curves["oracle"]["mean_score"]
    assert curve[0] == pytest.approx(clean, abs=1e-5) and curve[-1] == pytest.approx(floor, abs=1e-5)
    # the oracle deletes pixel (1, 1) first (W = 0.4): it becomes its blurred value
    assert curve[1] == pytest.approx(clean + 0.4 * blurred[1, 1], abs=1e-5)


def test_oracle_beats_random_on_the_planted_classifier(rng: np.random.Generator) -> None:
    proto = zoo.planted_region_classifier()
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    classes = np.argmax(run_onnx(proto)(images), axis=1)
    items = [GameItem(image, ExplainTarget(class_index=int(k)), {"oracle": box_map(rng)}) for image, k in zip(images, classes)]
    result = deletion(prepared(proto, {"kind": "classifier"}), items=items, options=DeletionOptions(steps=32))
    oracle, random = result.summary["oracle"], result.summary["random"]
    assert oracle["auc"] < random["auc"] and oracle["auc_normalised"] < random["auc_normalised"]
    # the box is 64 of 1024 pixels: after 2 of 32 steps the oracle has deleted all of it
    assert result.curves["oracle"]["normalised_score"][2] == pytest.approx(0.0, abs=1e-6)


def test_embedding_scores_mate_minus_non_mate_and_oracle_beats_random(rng: np.random.Generator) -> None:
    proto = zoo.planted_region_embedding()
    run = run_onnx(proto)
    probes = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    mates = np.clip(probes + rng.normal(0, 20, probes.shape), 0, 255).astype(np.float32)
    non_mates = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    items = [GameItem(p, ExplainTarget(mate=m, non_mate=n), {"oracle": box_map(rng)}) for p, m, n in zip(probes, mates, non_mates)]
    result = deletion(prepared(proto, {"kind": "embedding"}), items=items, options=DeletionOptions(steps=16))
    black = run(np.zeros((5, 32, 32, 3)))
    for name in ("oracle", "random"):
        curve = result.curves[name]["mean_score"]
        assert curve[0] == pytest.approx(np.mean(cosines(run(probes), run(mates)) - cosines(run(probes), run(non_mates))), abs=1e-5)
        assert curve[-1] == pytest.approx(np.mean(cosines(black, run(mates)) - cosines(black, run(non_mates))), abs=1e-5)
    assert result.summary["oracle"]["auc_normalised"] < result.summary["random"]["auc_normalised"]
    assert result.forward_passes == 10 + 5 * 2 + 5 * 15 * 2
    mate_only = [GameItem(p, ExplainTarget(mate=m), {"oracle": box_map(rng)}) for p, m in zip(probes, mates)]
    alone = deletion(prepared(proto, {"kind": "embedding"}), items=mate_only, options=DeletionOptions(steps=16))
    assert alone.curves["oracle"]["mean_score"][0] == pytest.approx(np.mean(cosines(run(probes), run(mates))), abs=1e-5)
    assert alone.summary["oracle"]["auc_normalised"] < alone.summary["random"]["auc_normalised"]


def test_a_baseline_that_scores_like_the_clean_image_is_refused_before_the_series() -> None:
    progress: list[int] = []
    with pytest.raises(InvalidRequest) as caught:  # the blur of a constant image is the image
        deletion(LINEAR, items=tiny_items(WHITE, WHITE), options=DeletionOptions(steps=4, baseline="blur"),
                 progress=lambda done, total, phase: progress.append(done))
    assert caught.value.field == "baseline"
    assert progress[-1] == 4  # the clean and the baseline images of two items, nothing more


@pytest.mark.parametrize(("values", "field"), [
    ({"steps": 0}, "steps"), ({"steps": "many"}, "steps"), ({"baseline": "mean"}, "baseline"),
    ({"blur_sigma": 0.0}, "blur_sigma"), ({"blur_sigma": float("inf")}, "blur_sigma"), ({"seed": -2}, "seed"),
    ({"chunk": 10**6}, "chunk"),
])
def test_bad_options_name_the_option(values: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        DeletionOptions(**values)
    assert caught.value.field == field


def test_more_steps_than_pixels_is_refused_and_text_options_parse() -> None:
    with pytest.raises(InvalidRequest) as caught:
        deletion(LINEAR, items=tiny_items(WHITE), options=DeletionOptions(steps=5))
    assert caught.value.field == "steps"
    assert options_from(DeletionOptions, {"steps": "10", "baseline": "blur", "blur_sigma": "2"}) == DeletionOptions(
        steps=10, baseline="blur", blur_sigma=2.0)
    assert DeletionOptions().baseline == "zero" and DeletionOptions().steps == 224


def test_results_do_not_depend_on_the_chunk_size(rng: np.random.Generator) -> None:
    images = rng.uniform(0, 255, (5, 2, 2, 3)).astype(np.float32)
    items = [GameItem(image, ExplainTarget(class_index=0), {"noise": rng.random((2, 2))}) for image in images]
    one = deletion(LINEAR, items=items, options=DeletionOptions(steps=4, chunk=64))
    split = deletion(LINEAR, items=items, options=DeletionOptions(steps=4, chunk=2))  # chunks of 2, 2, 1
    assert split.forward_passes == one.forward_passes == 5 * (2 + 3 * 2)
    for name in one.curves:
        np.testing.assert_allclose(split.curves[name]["mean_score"], one.curves[name]["mean_score"], atol=1e-6)
