"""Gradient maps against central differences of the black-box scorer in pixel space, any preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, contrast, scoring_target
from faceaudit.methods.gradient import GradientOptions, gradient
from faceaudit.testing import zoo

from tests.conftest import prepared

BOX = (8, 16, 20, 28)  # the planted models' region (zoo default)


def pixel_differences(model, image: np.ndarray, target: ExplainTarget, pixels: np.ndarray, h: float) -> np.ndarray:
    """(n, 3) central differences of the scorer's score (mate − non-mate for pairs) at pixels (n, 2), per channel."""
    steps = []
    for row, col in pixels:
        for channel in range(3):
            for sign in (1.0, -1.0):
                moved = image.copy()
                moved[row, col, channel] += sign * h
                steps.append(moved)
    scores = contrast(Scorer(model, scoring_target(model, target)).score([np.stack(steps)]).astype(np.float64))
    return ((scores[0::2] - scores[1::2]) / (2 * h)).reshape(len(pixels), 3)


CASES = {
    "nchw": (lambda: zoo.linear_classifier(height=8, width=8), {"kind": "classifier"}),
    "nhwc_bgr_mean_std": (lambda: zoo.linear_classifier(height=8, width=8, layout="NHWC"),
                          {"kind": "classifier", "channel_order": "BGR", "mean": [0.4, 0.5, 0.6],
                           "std": [0.2, 0.3, 0.25]}),
    "greyscale": (lambda: zoo.linear_classifier(height=8, width=8, channels=1),
                  {"kind": "classifier", "scale": 1.0, "mean": [127.5], "std": [128.0]}),
    "softmax": (lambda: zoo.linear_classifier(height=8, width=8), {"kind": "classifier", "softmax": True}),
    "planted_sigmoid": (lambda: zoo.planted_region_classifier(height=8, width=8, box=(2, 6, 1, 5)),
                        {"kind": "classifier"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_central_differences_of_the_score(case):
    build, spec = CASES[case]
    model = prepared(build(), spec)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    target = ExplainTarget(class_index=2)
    pixels = np.stack(np.unravel_index(rng.choice(64, 20, replace=False), (8, 8)), axis=1)
    numeric = pixel_differences(model, image, target, pixels, h=1.0)
    for reduce, expected in (("max_abs", np.abs(numeric).max(axis=1)), ("sum", numeric.sum(axis=1))):
        values = gradient(model, image=image, target=target, options=GradientOptions(reduce=reduce)).values
        scale = np.abs(values).max()
        assert np.abs(values[pixels[:, 0], pixels[:, 1]] - expected).max() <= 1e-3 * scale, reduce


def test_contrastive_embedding_gradient_is_that_of_the_cosine_difference():
    model = prepared(zoo.planted_region_embedding(height=8, width=8, box=(1, 7, 2, 8)), {"kind": "embedding"})
    rng = np.random.default_rng(1)
    image, mate, non_mate = rng.uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    target = ExplainTarget(mate=mate, non_mate=non_mate)
    pixels = np.stack(np.unravel_index(rng.choice(64, 20, replace=False), (8, 8)), axis=1)
    numeric = pixel_differences(model, image, target, pixels, h=1.0).sum(axis=1)
    result = gradient(model, image=image, target=target, options=GradientOptions(reduce="sum"))
    assert result.signed
    scale = np.abs(result.values).max()
    assert np.abs(result.values[pixels[:, 0], pixels[:, 1]] - numeric).max() <= 1e-3 * scale


@pytest.mark.parametrize(("build", "kind", "target"), [
    (zoo.planted_region_classifier, "classifier", ExplainTarget(class_index=1)),
    (zoo.planted_region_embedding, "embedding", None),
])
def test_planted_region_holds_all_of_the_gradient(build, kind, target):
    model = prepared(build(), {"kind": kind})
    image, mate = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    result = gradient(model, image=image, target=target or ExplainTarget(mate=mate))
    top, bottom, left, right = BOX
    inside = result.values[top:bottom, left:right]
    assert inside.min() > 0 and result.values.sum() == pytest.approx(inside.sum())  # zero outside the box
    assert result.forward_passes == 1 and result.extra["graph"] == "instrumented" and not result.signed


def test_reduce_is_validated():
    with pytest.raises(InvalidRequest) as info:
        GradientOptions(reduce="l2")
    assert info.value.field == "reduce"
