"""CorrRISE against np.corrcoef pixel by pixel, on embeddings computed here with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.corr_rise import CorrelationSums, CorrRiseOptions, corr_rise
from faceaudit.methods.rise import RiseOptions
from faceaudit.testing import zoo
from onnx import numpy_helper

from tests.conftest import prepared
from tests.methods.test_rise import (
    PLANTED_CELLS, PLANTED_MASKS, all_masks, cosines, peak_bytes, planted_share, random_maps_fail, run_onnx,
)


def pixel_correlations(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """np.corrcoef of each pixel's mask values with the scores."""
    flat = masks.reshape(len(masks), -1)
    return np.array([np.corrcoef(flat[:, j], scores)[0, 1] for j in range(flat.shape[1])]).reshape(masks.shape[1:])


def linear_embedder():
    proto = zoo.linear_classifier(height=8, width=8, classes=6, seed=4)
    return proto, prepared(proto, {"kind": "embedding"})


def test_map_equals_the_per_pixel_pearson_correlation(faces):
    proto, model = linear_embedder()
    probe, mate = faces(2, 8, 8)
    options = CorrRiseOptions(masks=300, cells=3, keep=0.4, seed=8, chunk=17, design="independent")
    result = corr_rise(model, image=probe, target=ExplainTarget(mate=mate), options=options)

    run = run_onnx(proto)
    masks = all_masks(8, 300, 3, 0.4, 8, 8).astype(np.float64)
    scores = cosines(run(probe[None] * masks[..., None]), run(mate[None])[0])
    np.testing.assert_allclose(result.values, pixel_correlations(masks, scores), rtol=1e-5, atol=1e-6)
    assert (result.method, result.forward_passes, result.extra["masks"], result.signed) == ("corr_rise", 300, 300, True)


def test_contrastive_map_is_the_difference_of_the_correlations(faces):
    proto, model = linear_embedder()
    probe, mate, non_mate = faces(3, 8, 8)
    options = CorrRiseOptions(masks=200, cells=4, seed=1)
    result = corr_rise(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate), options=options)

    run = run_onnx(proto)
    masks = all_masks(1, 200, 4, 0.5, 8, 8, design="orthogonal").astype(np.float64)  # the default design
    embeddings = run(probe[None] * masks[..., None])
    expected = (pixel_correlations(masks, cosines(embeddings, run(mate[None])[0]))
                - pixel_correlations(masks, cosines(embeddings, run(non_mate[None])[0])))
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6)


def test_running_sums_give_zero_where_a_pixel_does_not_vary():
    rng = np.random.default_rng(2)
    masks = rng.random((1000, 3, 4)).astype(np.float32)
    masks[:, 0, 0] = 0.7  # constant, not exact in binary: in chunks of 37, N·ΣM² − (ΣM)² rounds to 2e-10
    masks[:, 2, 3] = 1.0
    scores = rng.normal(size=(1000, 2)).astype(np.float32)
    sums = CorrelationSums(3, 4, columns=2)
    cuts = range(37, 1000, 37)
    for chunk, chunk_scores in zip(np.split(masks, cuts), np.split(scores, cuts)):
        sums.add(chunk, chunk_scores)
    correlation = sums.correlation()
    assert (correlation[:, 0, 0] == 0).all() and (correlation[:, 2, 3] == 0).all()
    varying = np.ones((3, 4), bool)
    varying[0, 0] = varying[2, 3] = False
    for column in range(2):
        with np.errstate(invalid="ignore", divide="ignore"):  # corrcoef of a constant is NaN
            expected = pixel_correlations(masks.astype(np.float64), scores[:, column].astype(np.float64))
        np.testing.assert_allclose(correlation[column][varying], expected[varying], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("values", "field"), [
    ({"keep": 1.0, "design": "independent"}, "keep"), ({"keep": 1.0}, "keep"), ({"keep": 1.0, "design": "orthogonal"},
                                                                                "design"), ({"masks": 1}, "masks"),
])
def test_options_that_cannot_vary_the_masks_are_refused(values, field):
    with pytest.raises(InvalidRequest) as info:
        CorrRiseOptions(**values)
    assert info.value.field == field


def test_a_similarity_that_never_varies_is_an_error_not_an_empty_map(faces):
    """A model that ignores every pixel (constant embedding) gives identical scores for all masks."""
    proto = zoo.linear_classifier(height=8, width=8, classes=4)
    for tensor in proto.graph.initializer:
        if tensor.name == "W":
            tensor.CopyFrom(numpy_helper.from_array(np.zeros((4, 192), np.float32), "W"))
    model = prepared(proto, {"kind": "embedding"})
    probe, mate = faces(2, 8, 8)
    with pytest.raises(InvalidRequest, match="did not vary") as info:
        corr_rise(model, image=probe, target=ExplainTarget(mate=mate), options=CorrRiseOptions(masks=50, cells=3))
    assert info.value.field == "target"


def test_tiny_but_real_similarity_variation_is_not_lost_to_rounding(faces):
    """Embedding b + ε·W·x with ε = 1e-3: cosines near 1 varying by ~1e-6 (the review's case)."""
    proto = zoo.linear_classifier(height=8, width=8, classes=4)
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for tensor in proto.graph.initializer:
        if tensor.name == "W":
            tensor.CopyFrom(numpy_helper.from_array((weights["W"] * 1e-3).astype(np.float32), "W"))
        if tensor.name == "b":
            tensor.CopyFrom(numpy_helper.from_array(np.ones(4, np.float32), "b"))
    model = prepared(proto, {"kind": "embedding"})
    probe, mate = faces(2, 8, 8)
    options = CorrRiseOptions(masks=400, cells=3, seed=2)
    result = corr_rise(model, image=probe, target=ExplainTarget(mate=mate), options=options)
    run = run_onnx(proto)
    masks = all_masks(2, 400, 3, 0.5, 8, 8, design="orthogonal").astype(np.float64)
    scores = cosines(run(probe[None] * masks[..., None]), run(mate[None])[0])
    assert np.ptp(scores) < 1e-4 * np.abs(scores).mean()  # the hard case: variation far below the mean
    np.testing.assert_allclose(result.values, pixel_correlations(masks, scores), atol=0.02)
    assert np.abs(result.values).max() > 0.2  # not the silently empty map of one-pass cancellation


def test_a_non_mate_equal_to_the_mate_gives_an_empty_contrastive_map(faces):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = faces(2, 32, 32)
    target = ExplainTarget(mate=mate, non_mate=mate)
    values = corr_rise(model, image=probe, target=target, options=CorrRiseOptions(masks=200)).values
    assert np.abs(values).max() < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_region_holds_the_map_mass(faces, seed):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = faces(2, 32, 32)
    options = CorrRiseOptions(masks=PLANTED_MASKS, cells=PLANTED_CELLS, seed=seed)
    values = corr_rise(model, image=probe, target=ExplainTarget(mate=mate), options=options).values
    assert planted_share(values) >= 0.9
    random_maps_fail(values)


def test_peak_memory_does_not_depend_on_the_number_of_masks(faces):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = faces(2, 32, 32)

    def peak(masks: int) -> int:
        options = CorrRiseOptions(masks=masks, chunk=64)
        return peak_bytes(lambda: corr_rise(model, image=probe, target=ExplainTarget(mate=mate), options=options))

    small, large = peak(200), peak(4000)
    assert abs(large - small) < 64 * 32 * 32 * 4, (small, large)  # less than one chunk of masks


def test_progress_reaches_the_total(faces):
    _, model = linear_embedder()
    probe, mate = faces(2, 8, 8)
    calls: list[tuple[int, int, str]] = []
    options = CorrRiseOptions(masks=100, cells=3, chunk=40, design="independent")  # orthogonal: see test_rise_estimators
    corr_rise(model, image=probe, target=ExplainTarget(mate=mate), options=options,
              progress=lambda *call: calls.append(call))
    assert calls == [(40, 100, "corr_rise"), (80, 100, "corr_rise"), (100, 100, "corr_rise")]


def test_options_are_rise_options_with_rise_defaults():
    assert CorrRiseOptions().__dict__ == RiseOptions().__dict__
    with pytest.raises(InvalidRequest) as info:
        CorrRiseOptions(keep=0)
    assert info.value.field == "keep"


def test_a_classifier_is_refused():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    with pytest.raises(InvalidRequest) as info:
        corr_rise(model, image=np.zeros((8, 8, 3), np.float32), target=ExplainTarget(class_index=0))
    assert info.value.field == "target"
