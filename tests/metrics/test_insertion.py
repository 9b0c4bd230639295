"""Insertion against hand-computed curves, the deletion identity of a linear model, and planted ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.deletion import DeletionOptions, deletion
from faceaudit.metrics.insertion import InsertionOptions, insertion
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.metrics.test_hiding_game import WHITE, box_map, curves_from, run_onnx, tiny_items, tiny_linear

LINEAR = prepared(tiny_linear(bias=(0.2, 0.5)), {"kind": "classifier"})


def test_zero_baseline_curves_and_areas_match_the_hand_computed_ones() -> None:
    points: list[GamePoint] = []
    result = insertion(LINEAR, items=tiny_items(WHITE), options=InsertionOptions(steps=4, baseline="zero"),
                       on_point=points.append)
    assert result.x == [0.0, 0.25, 0.5, 0.75, 1.0]
    # from black (0.2), the oracle inserts 0.4, 0.3, 0.2, 0.1 in turn
    np.testing.assert_allclose(result.curves["oracle"]["mean_score"], [0.2, 0.6, 0.9, 1.1, 1.2], atol=1e-6)
    np.testing.assert_allclose(result.curves["inverse"]["mean_score"], [0.2, 0.3, 0.5, 0.8, 1.2], atol=1e-6)
    # (0.2+0.6)/2 + (0.6+0.9)/2 + (0.9+1.1)/2 + (1.1+1.2)/2 = 3.3, × 0.25
    assert result.summary["oracle"]["auc"] == pytest.approx(0.825, abs=1e-6)
    assert result.summary["oracle"]["auc_normalised"] == pytest.approx(0.625, abs=1e-6)
    assert result.summary["inverse"]["auc_normalised"] == pytest.approx(0.375, abs=1e-6)
    assert curves_from(points) == result.curves
    assert result.forward_passes == 2 + 3 * 3


def test_deletion_and_insertion_of_a_linear_model_add_up_to_clean_plus_baseline(rng: np.random.Generator) -> None:
    # For a linear score, deleting the first k pixels and inserting them give the two halves of
    # the image: del(k) + ins(k) = clean + baseline, so the normalised areas add up to 1, every series.
    images = rng.uniform(0, 255, (3, 2, 2, 3)).astype(np.float32)
    items = [GameItem(image, ExplainTarget(class_index=0), {"noise": rng.random((2, 2))}) for image in images]
    removed = deletion(LINEAR, items=items, options=DeletionOptions(steps=4, baseline="blur", blur_sigma=0.7, seed=5))
    added = insertion(LINEAR, items=items, options=InsertionOptions(steps=4, blur_sigma=0.7, seed=5))
    for name in ("noise", "random"):
        assert removed.summary[name]["auc_normalised"] + added.summary[name]["auc_normalised"] == pytest.approx(1.0, abs=1e-5)


def test_oracle_beats_random_on_the_planted_models(rng: np.random.Generator) -> None:
    proto = zoo.planted_region_classifier()
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    classes = np.argmax(run_onnx(proto)(images), axis=1)
    items = [GameItem(image, ExplainTarget(class_index=int(k)), {"oracle": box_map(rng)}) for image, k in zip(images, classes)]
    zero = InsertionOptions(steps=32, baseline="zero")  # blurring random noise keeps its mean: too close to the clean score
    result = insertion(prepared(proto, {"kind": "classifier"}), items=items, options=zero)
    assert result.summary["oracle"]["auc_normalised"] > result.summary["random"]["auc_normalised"]
    # after 2 of 32 steps the oracle has inserted the whole 64-pixel box: the clean score
    assert result.curves["oracle"]["normalised_score"][2] == pytest.approx(1.0, abs=1e-6)
    embedder = zoo.planted_region_embedding()
    mates = np.clip(images + rng.normal(0, 20, images.shape), 0, 255).astype(np.float32)
    pairs = [GameItem(p, ExplainTarget(mate=m), {"oracle": box_map(rng)}) for p, m in zip(images, mates)]
    matched = insertion(prepared(embedder, {"kind": "embedding"}), items=pairs, options=InsertionOptions(steps=32))
    assert matched.summary["oracle"]["auc_normalised"] > matched.summary["random"]["auc_normalised"]


def test_defaults_and_bad_options() -> None:
    assert InsertionOptions().baseline == "blur" and InsertionOptions().blur_sigma == 5.0
    with pytest.raises(InvalidRequest) as caught:
        InsertionOptions(baseline="noise")
    assert caught.value.field == "baseline"
    with pytest.raises(InvalidRequest) as caught:
        insertion(LINEAR, items=[GameItem(WHITE, ExplainTarget(class_index=0), {})])
    assert caught.value.field == "items"
