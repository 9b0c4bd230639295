"""KernelSHAP and LIME over superpixels: exact Shapley values by brute force, closed forms on a linear model."""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.kernel_shap import KernelShapOptions, kernel_shap, shapley_coalitions
from faceaudit.methods.lime import LimeOptions, lime, lime_weights, weighted_ridge
from faceaudit.methods.superpixels import segment
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.whitebox.numerics import session

SIZE = 8


def _linear():
    proto = zoo.linear_classifier(height=SIZE, width=SIZE)
    w = {t.name: t for t in proto.graph.initializer}["W"]
    weights = np.frombuffer(w.raw_data, dtype=np.float32).reshape(w.dims).astype(np.float64)
    return prepared(proto, {"kind": "classifier", "softmax": False}), weights


def _additive_effects(weights: np.ndarray, k: int, image: np.ndarray, fill: float, labels: np.ndarray) -> np.ndarray:
    """Effect of keeping superpixel m alone on the logit k: Σ_{pixels of m} w_k · (image − fill) / 255."""
    contribution = (weights[k].reshape(3, SIZE, SIZE).transpose(1, 2, 0) * (image - fill) / 255.0).sum(axis=-1)
    return np.array([contribution[labels == m].sum() for m in range(labels.max() + 1)])


def test_grid_segmentation_and_validation():
    labels = segment(np.zeros((8, 8, 3)), "grid", 4, 10.0)
    np.testing.assert_array_equal(labels[:4, :4], 0)
    np.testing.assert_array_equal(labels[4:, 4:], 3)
    for options, name in ((dict(segmentation="watershed"), "segmentation"), (dict(segments=1), "segments"),
                          (dict(compactness=0), "compactness"), (dict(samples=1), "samples")):
        for cls in (KernelShapOptions, LimeOptions):
            with pytest.raises(InvalidRequest) as info:
                cls(**options)
            assert info.value.field == name


@pytest.mark.parametrize("samples", [14, 40])  # 14 = every coalition of 4 superpixels (exact); 40 of 9 (sampled)
def test_kernel_shap_on_a_linear_model_gives_the_additive_effects(samples):
    model, weights = _linear()
    image = np.random.default_rng(0).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    segments = 4 if samples == 14 else 9
    options = KernelShapOptions(samples=samples, segmentation="grid", segments=segments, fill="constant",
                                constant=(100.0,))
    result = kernel_shap(model, image=image, target=ExplainTarget(class_index=2), options=options)
    labels = segment(image, "grid", segments, 10.0)
    expected = _additive_effects(weights, 2, image, 100.0, labels)[labels]
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-4)
    assert result.extra["exact"] == (samples == 14) and result.signed


def test_kernel_shap_enumeration_equals_brute_force_shapley_values_of_a_nonlinear_model():
    proto = zoo.vgg_classifier(height=16, width=16)
    model = prepared(proto, {"kind": "classifier", "softmax": False})
    image = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    labels = segment(image, "grid", 4, 10.0)
    run = session(proto)

    def f(keep: tuple[int, ...]) -> float:
        kept = np.isin(labels, keep)[..., None]
        pixels = np.where(kept, image, 0.0)
        x = (pixels / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
        return float(run.run(None, {run.get_inputs()[0].name: x})[0][0, 3])

    m = 4
    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            for s in combinations(others, size):
                weight = factorial(size) * factorial(m - size - 1) / factorial(m)
                phi[i] += weight * (f(tuple(sorted(s + (i,)))) - f(s))
    result = kernel_shap(model, image=image, target=ExplainTarget(class_index=3),
                         options=KernelShapOptions(samples=14, segmentation="grid", segments=4, fill="zero"))
    np.testing.assert_allclose(result.values, phi[labels], rtol=1e-4, atol=1e-5)
    assert result.extra["exact"]


def test_sampled_coalitions_come_in_complementary_pairs():
    z, weights = shapley_coalitions(12, 100, np.random.default_rng(0))
    assert z.shape == (100, 12) and (weights == 1).all()
    np.testing.assert_array_equal(z[:50], ~z[50:])
    assert z.sum(axis=1).min() >= 1 and z.sum(axis=1).max() <= 11


def test_lime_weights_and_ridge_closed_forms():
    z = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    cos_half = 2 / (np.sqrt(2) * 2)
    np.testing.assert_allclose(lime_weights(z, 0.25), [1.0, np.sqrt(np.exp(-((1 - cos_half) ** 2) / 0.0625)),
                                                        np.sqrt(np.exp(-1 / 0.0625))])
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (50, 5)).astype(bool)
    y, w = rng.normal(size=50), rng.uniform(0.1, 1.0, 50)
    # the same fit written as one augmented least-squares problem with an unpenalised intercept column
    design = np.hstack([np.ones((50, 1)), z.astype(float)])
    rows = np.vstack([design * np.sqrt(w)[:, None], np.hstack([np.zeros((5, 1)), np.sqrt(2.0) * np.eye(5)])])
    target = np.concatenate([y * np.sqrt(w), np.zeros(5)])
    expected = np.linalg.lstsq(rows, target, rcond=None)[0][1:]
    np.testing.assert_allclose(weighted_ridge(z, y, w, 2.0), expected, rtol=1e-10, atol=1e-12)


def test_unpenalised_lime_on_a_linear_model_gives_the_additive_effects():
    model, weights = _linear()
    image = np.random.default_rng(2).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    options = LimeOptions(samples=200, ridge=0.0, segmentation="grid", segments=4, fill="zero")
    result = lime(model, image=image, target=ExplainTarget(class_index=1), options=options)
    labels = segment(image, "grid", 4, 10.0)
    np.testing.assert_allclose(result.values, _additive_effects(weights, 1, image, 0.0, labels)[labels],
                               rtol=1e-4, atol=1e-4)
    assert result.forward_passes == 200


def test_lime_and_shap_find_the_planted_region_on_a_rendered_face():
    """slic superpixels on a face: the superpixels inside the planted region get the top values."""
    from faceaudit.demo import faces, params
    rng = np.random.default_rng(3)
    face = faces.render(params.FaceParams(params.sample_identity(rng), params.sample_nuisance(rng)), 32).image
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    box = (8, 16, 20, 28)
    inside = np.zeros((32, 32), bool)
    inside[box[0]:box[1], box[2]:box[3]] = True
    for method, options in ((lime, LimeOptions(samples=300, segments=30)),
                            (kernel_shap, KernelShapOptions(samples=300, segments=30))):
        values = method(model, image=face.astype(np.float32), target=ExplainTarget(class_index=0), options=options).values
        assert np.abs(values[inside]).mean() > 5 * np.abs(values[~inside]).mean(), method.__name__
