"""Insertion against hand-computed curves, the deletion identity of a linear model, a numpy port of
Petsiuk et al.'s evaluation code (their blur written out by hand) and planted ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.causal_metric import causal_baseline
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.deletion import DeletionOptions, deletion
from faceaudit.metrics.insertion import InsertionOptions, insertion
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.metrics.test_deletion import NORMALISED, normalised_probabilities, petsiuk_auc
from tests.metrics.test_hiding_game import WHITE, box_map, curves_from, run_onnx, tiny_items, tiny_linear

LINEAR = prepared(tiny_linear(bias=(0.2, 0.5)), {"kind": "classifier"})


def folded_gaussian(klen: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Petsiuk's gkern(klen, σ) worked out by hand: scipy's gaussian_filter of a klen×klen unit impulse
    (reflect mode, taps to ⌊4σ + ½⌋) is separable; along an axis the tap at offset t lands on the
    index that reflecting i + t into [0, klen) gives (period 2·klen, d c b a | a b c d | d c b a), so
    each kernel entry sums the Gaussian taps that fold onto the centre."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    taps = np.exp(-offsets**2 / (2 * sigma**2))
    taps /= taps.sum()
    line = np.zeros(klen)
    for i in range(klen):
        for t, tap in zip(offsets, taps):
            q = (i + t) % (2 * klen)
            if (q if q < klen else 2 * klen - 1 - q) == klen // 2:
                line[i] += tap
    return np.outer(line, line)


def petsiuk_blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Their conv2d(x, gkern, padding=klen // 2) per channel of a normalised (H, W, C) input: zero padding."""
    r = kernel.shape[0] // 2
    height, width = x.shape[:2]
    padded = np.pad(x, ((r, r), (r, r), (0, 0)))
    out = np.zeros_like(x, dtype=np.float64)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return out


def test_petsiuks_kernel_is_a_folded_gaussian_nearly_a_box() -> None:
    kernel = folded_gaussian()
    line = kernel.sum(axis=1)
    assert kernel.sum() == pytest.approx(1.0)
    assert np.sqrt(np.sum(line * (np.arange(11) - 5) ** 2)) == pytest.approx(3.13, abs=0.01)  # not σ = 5
    assert line.max() / line.min() < 1.3  # nearly flat over the 11 px


def test_the_default_baseline_is_petsiuks_blur_of_the_normalised_input(rng: np.random.Generator) -> None:
    proto = zoo.vgg_classifier(height=16, width=16, seed=1)
    model = prepared(proto, NORMALISED)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    maps = [rng.random((16, 16)) for _ in images]
    kernel = folded_gaussian()
    normalise = lambda image: (image / 255 - 0.5) / 0.5  # noqa: E731
    # the baseline image: their blur of the normalised input, mapped back to pixels (p = 255·(x·0.5 + 0.5))
    blurred = 255 * (petsiuk_blur(normalise(images[0].astype(np.float64)), kernel) * 0.5 + 0.5)
    ours = causal_baseline(images[0], "petsiuk_blur", 5.0, model.spec)
    np.testing.assert_allclose(ours, blurred, atol=1e-3)
    # a white image stays white inside and fades towards the zero input's grey at the border: at
    # the corner only the kernel's lower-right quadrant (offsets 0..5) covers the image
    white = causal_baseline(np.full((16, 16, 3), 255.0, np.float32), "petsiuk_blur", 5.0, model.spec)
    assert white[8, 8, 0] == pytest.approx(255.0, abs=1e-3)
    assert white[0, 0, 0] == pytest.approx(127.5 + 127.5 * kernel[5:, 5:].sum(), abs=1e-3)
    reference = [petsiuk_auc(normalised_probabilities(proto), normalise(i.astype(np.float64)), m, insert=True,
                             step=16, substrate=lambda x: petsiuk_blur(x, kernel)) for i, m in zip(images, maps)]
    items = [GameItem(i, ExplainTarget(class_index=c), {"m": m}) for i, m, (_, c) in zip(images, maps, reference)]
    result = insertion(model, items=items, options=InsertionOptions(steps=16))
    assert result.summary["m"]["auc"] == pytest.approx(np.mean([auc for auc, _ in reference]), abs=1e-5)


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
    added = insertion(LINEAR, items=items, options=InsertionOptions(steps=4, baseline="blur", blur_sigma=0.7, seed=5))
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
    assert InsertionOptions().baseline == "petsiuk_blur" and InsertionOptions().blur_sigma == 5.0
    with pytest.raises(InvalidRequest) as caught:
        InsertionOptions(baseline="noise")
    assert caught.value.field == "baseline"
    with pytest.raises(InvalidRequest) as caught:
        insertion(LINEAR, items=[GameItem(WHITE, ExplainTarget(class_index=0), {})])
    assert caught.value.field == "items"
