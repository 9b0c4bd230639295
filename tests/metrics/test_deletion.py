"""Deletion against hand-computed curves, a numpy port of Petsiuk et al.'s evaluation code, planted
ground truth and direct onnxruntime runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget, options_from
from faceaudit.metrics.causal_metric import causal_baseline
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.deletion import DeletionOptions, deletion
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.metrics.test_hiding_game import (
    WEIGHTS, WHITE, box_map, cosines, curves_from, gaussian_nearest, run_onnx, tiny_items, tiny_linear,
)

# logit_0 = 0.2 + Σ kept W_p on a white image (W = 0.1, 0.2, 0.3, 0.4), logit_1 = 0.5
LINEAR = prepared(tiny_linear(bias=(0.2, 0.5)), {"kind": "classifier"})
# Petsiuk's setting: a normalised input (here mean = std = 0.5 on [0, 1]) and softmax probabilities
NORMALISED = {"kind": "classifier", "softmax": True, "scale": 1 / 255, "mean": [0.5], "std": [0.5]}


def normalised_probabilities(proto: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """Softmax of the model's logits for (N, H, W, 3) inputs already normalised, run directly."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def probabilities(x: np.ndarray) -> np.ndarray:
        z = session.run(None, {"input": x.transpose(0, 3, 1, 2).astype(np.float32)})[0].astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return probabilities


def petsiuk_auc(probabilities: Callable[[np.ndarray], np.ndarray], x: np.ndarray, saliency: np.ndarray, *,
                insert: bool, step: int, substrate: Callable[[np.ndarray], np.ndarray]) -> tuple[float, int]:
    """Petsiuk et al.'s CausalMetric.single_run (RISE evaluation.py) in numpy, on one normalised (H, W, 3)
    input: the top-1 class's probability while `step` pixels a step go from start to finish, most
    salient first; auc = (Σ scores − s_0/2 − s_n/2)/n. Returns (auc, top-1 class)."""
    pixels = saliency.size
    c = int(np.argmax(probabilities(x[None])[0]))
    start, finish = (substrate(x), x.copy()) if insert else (x.copy(), substrate(x))
    order = np.flip(np.argsort(saliency.reshape(pixels)))
    n_steps = (pixels + step - 1) // step
    scores = []
    for i in range(n_steps + 1):
        scores.append(probabilities(start[None])[0, c])
        coords = order[step * i : step * (i + 1)]
        start.reshape(pixels, 3)[coords] = finish.reshape(pixels, 3)[coords]
    curve = np.array(scores)
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1)), c


def test_the_default_baseline_reproduces_petsiuks_zeros_on_the_normalised_input(rng: np.random.Generator) -> None:
    proto = zoo.vgg_classifier(height=16, width=16, seed=1)
    probabilities = normalised_probabilities(proto)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    maps = [rng.random((16, 16)) for _ in images]
    normalise = lambda image: (image / 255 - 0.5) / 0.5  # noqa: E731
    for substrate, baseline in ((np.zeros_like, "input_zero"),  # their torch.zeros_like: mid-grey pixels
                                (lambda x: np.full_like(x, -1.0), "zero")):  # black pixels: −1 after normalising
        reference = [petsiuk_auc(probabilities, normalise(i.astype(np.float64)), m, insert=False, step=16,
                                 substrate=substrate) for i, m in zip(images, maps)]
        items = [GameItem(i, ExplainTarget(class_index=c), {"m": m}) for i, m, (_, c) in zip(images, maps, reference)]
        options = DeletionOptions(steps=16) if baseline == "input_zero" else DeletionOptions(steps=16, baseline=baseline)
        result = deletion(prepared(proto, NORMALISED), items=items, options=options)
        assert result.summary["m"]["auc"] == pytest.approx(np.mean([auc for auc, _ in reference]), abs=1e-5)
    assert not any("logits" in note for note in result.notes)  # softmax: probabilities, as Petsiuk's


@pytest.mark.parametrize(("channels", "spec"), [
    (3, {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}),
    (3, {"channel_order": "BGR", "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}),
    (3, {"scale": 1.0, "mean": [127.5], "std": [128.0]}),
    (1, {"scale": 1.0, "mean": [100.0], "std": [50.0]}),  # greyscale: the luma of a grey pixel is its value
])
def test_input_zero_is_what_the_model_sees_as_zero_and_zero_is_black(channels: int, spec: dict) -> None:
    model = prepared(zoo.vgg_classifier(height=8, width=8, channels=channels), {"kind": "classifier", **spec})
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    seen = to_model_input(causal_baseline(image, "input_zero", 5.0, model.spec)[None], model.spec)
    np.testing.assert_allclose(seen, 0.0, atol=1e-5)
    assert np.array_equal(causal_baseline(image, "zero", 5.0, model.spec), np.zeros_like(image))
    # Petsiuk's blur pads the normalised input with zeros: a flat input_zero image stays itself
    flat = causal_baseline(image, "input_zero", 5.0, model.spec)
    np.testing.assert_allclose(causal_baseline(flat, "petsiuk_blur", 5.0, model.spec), flat, rtol=1e-5, atol=1e-3)


def test_a_constant_map_deletes_no_part_of_the_image_first() -> None:
    # Two 8×8 linear classifiers on white images, one scoring only the top half, one only the bottom.
    # A constant map ties every pixel: in a uniformly random order the expected share of either
    # half still there after deleting a fraction x is 1 − x, so the normalised curve is 1 − x for
    # both (raster order would delete the whole top half first: 0 at x = 0.5 for the top model).
    half = np.zeros((8, 8))
    half[:4] = 1 / 32
    images = [np.full((8, 8, 3), 255.0, np.float32)] * 40
    curves = []
    for weights in (half, half[::-1]):
        model = prepared(tiny_linear(bias=(0.0, 0.0), weights=weights), {"kind": "classifier"})
        items = [GameItem(image, ExplainTarget(class_index=0), {"flat": np.zeros((8, 8))}) for image in images]
        result = deletion(model, items=items, options=DeletionOptions(steps=8, seed=3))
        curves.append(np.array(result.curves["flat"]["normalised_score"]))
        np.testing.assert_allclose(curves[-1], 1 - np.array(result.x), atol=0.05)
    np.testing.assert_allclose(curves[0], curves[1], atol=0.06)


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
    blurred = gaussian_nearest(image[..., 0], 1.0) / 255
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
    assert DeletionOptions().baseline == "input_zero" and DeletionOptions().steps == 224


def test_logit_scores_are_noted_as_not_petsiuks_probabilities() -> None:
    result = deletion(LINEAR, items=tiny_items(WHITE), options=DeletionOptions(steps=4))
    assert any("logits" in note and "softmax" in note for note in result.notes)


def test_results_do_not_depend_on_the_chunk_size(rng: np.random.Generator) -> None:
    images = rng.uniform(0, 255, (5, 2, 2, 3)).astype(np.float32)
    items = [GameItem(image, ExplainTarget(class_index=0), {"noise": rng.random((2, 2))}) for image in images]
    one = deletion(LINEAR, items=items, options=DeletionOptions(steps=4, chunk=64))
    split = deletion(LINEAR, items=items, options=DeletionOptions(steps=4, chunk=2))  # chunks of 2, 2, 1
    assert split.forward_passes == one.forward_passes == 5 * (2 + 3 * 2)
    for name in one.curves:
        np.testing.assert_allclose(split.curves[name]["mean_score"], one.curves[name]["mean_score"], atol=1e-6)
