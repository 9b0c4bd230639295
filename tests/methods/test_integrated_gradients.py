"""Integrated Gradients: exact on a linear model, completeness within 1 % on a ReLU network, quadratures."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradient import GradientOptions, gradient
from faceaudit.methods.integrated_gradients import IntegratedGradientsOptions, integrated_gradients, quadrature
from faceaudit.testing import zoo

from tests.conftest import prepared


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_quadrature_weights_sum_to_one_and_integrate_x_squared(rule):
    nodes, weights = quadrature(rule, 40)
    assert weights.sum() == pytest.approx(1.0) and nodes.min() >= 0 and nodes.max() <= 1
    assert (weights * nodes**2).sum() == pytest.approx(1 / 3, rel=0.05)  # right Riemann: error ≈ 1/(2n)
    if rule == "gauss_legendre":
        assert (weights * nodes**7).sum() == pytest.approx(1 / 8, rel=1e-12)  # exact for low degrees


def test_linear_model_attributions_are_delta_times_gradient():
    """For s = w·x + b the path gradient is constant: IG = (I − I')·∂s/∂I for any rule and step count."""
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    image = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    target = ExplainTarget(class_index=3)
    ig = integrated_gradients(model, image=image, target=target,
                              options=IntegratedGradientsOptions(steps=3, rule="riemann_right", fill="constant",
                                                                 constant=(40.0,)))
    # with reduce=sum the gradient map is Σ_c ∂s/∂I_c; every channel shares (I − 40) only per pixel
    # and channel, so compare per channel through the weights: W·x is the logit.
    w = {t.name: t for t in model.loaded.proto.graph.initializer}["W"]
    weights = np.frombuffer(w.raw_data, dtype=np.float32).reshape(w.dims)[3].reshape(3, 8, 8).transpose(1, 2, 0)
    expected = ((image.astype(np.float64) - 40.0) * weights / 255.0).sum(axis=-1)
    np.testing.assert_allclose(ig.values, expected, rtol=1e-5, atol=1e-6)
    completeness = ig.extra["completeness"]
    assert completeness["relative_gap"] < 1e-5


def test_completeness_within_one_percent_on_a_relu_network():
    model = prepared(zoo.vgg_classifier(height=16, width=16), {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    ig = integrated_gradients(model, image=image, target=ExplainTarget(class_index=2),
                              options=IntegratedGradientsOptions(steps=128, chunk=64))
    completeness = ig.extra["completeness"]
    assert abs(completeness["score_difference"]) > 1e-3  # a real score change to explain
    assert completeness["relative_gap"] < 0.01
    assert float(ig.values.sum()) == pytest.approx(completeness["sum_of_attributions"], rel=1e-4)
    assert ig.forward_passes == 130 and ig.signed


def test_one_step_riemann_right_is_gradient_times_input_from_black():
    model = prepared(zoo.vgg_classifier(height=16, width=16), {"kind": "classifier"})
    image = np.random.default_rng(2).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    target = ExplainTarget(class_index=0)
    ig = integrated_gradients(model, image=image, target=target,
                              options=IntegratedGradientsOptions(steps=1, rule="riemann_right", reduce="max_abs"))
    from faceaudit.methods.gradient import instrument_for, pixel_gradients
    wb = instrument_for(model, target)
    grads = next(pixel_gradients(model, wb, iter([image[None]]), target))[0][0]
    np.testing.assert_allclose(ig.values, np.abs(image * grads).max(axis=-1), rtol=1e-5, atol=1e-8)
    assert gradient(model, image=image, target=target, options=GradientOptions()).values.shape == ig.values.shape


def test_embedding_completeness_and_options():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    probe, mate, non_mate = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    ig = integrated_gradients(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate),
                              options=IntegratedGradientsOptions(steps=64, fill="blur", chunk=32))
    assert ig.extra["completeness"]["relative_gap"] < 0.05
    for name, value in (("steps", 0), ("rule", "simpson"), ("reduce", "mean"), ("chunk", 0)):
        with pytest.raises(InvalidRequest) as info:
            IntegratedGradientsOptions(**{name: value})
        assert info.value.field == name
    with pytest.raises(InvalidRequest, match="trapezoid"):
        quadrature("riemann_trapezoid", 1)
