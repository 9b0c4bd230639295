"""SmoothGrad against the gradient method run on each noisy copy separately, and its limits."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradient import GradientOptions, gradient
from faceaudit.methods.smoothgrad import SmoothGradOptions, smoothgrad
from faceaudit.testing import zoo

from tests.conftest import prepared


@pytest.fixture(scope="module")
def vgg():
    return prepared(zoo.vgg_classifier(height=16, width=16), {"kind": "classifier"})


def test_zero_noise_is_the_gradient(vgg):
    image = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    target = ExplainTarget(class_index=2)
    for reduce in ("max_abs", "sum"):
        smooth = smoothgrad(vgg, image=image, target=target, options=SmoothGradOptions(samples=3, noise=0.0, reduce=reduce))
        plain = gradient(vgg, image=image, target=target, options=GradientOptions(reduce=reduce))
        np.testing.assert_allclose(smooth.values, plain.values, rtol=1e-6, atol=1e-9)
        assert smooth.forward_passes == 3


def test_mean_of_separately_computed_gradients_on_the_same_noise(vgg):
    """Batched (chunks of 2) SmoothGrad equals the mean of per-copy gradients, one run each."""
    # mid-range pixels and σ = 12.75 px keep every copy inside [0, 255], which `gradient` requires
    image = np.random.default_rng(1).uniform(70, 185, (16, 16, 3)).astype(np.float32)
    target = ExplainTarget(class_index=1)
    options = SmoothGradOptions(samples=5, noise=0.05, reduce="sum", seed=3, chunk=2)
    smooth = smoothgrad(vgg, image=image, target=target, options=options)
    rng = np.random.default_rng(3)
    noise = [rng.normal(0.0, 0.05 * 255.0, (n, 16, 16, 3)) for n in (2, 2, 1)]
    copies = (image + np.concatenate(noise)).astype(np.float32)
    # sum-reduced maps are linear in the gradient, so their mean is the reduced mean gradient
    expected = np.mean([gradient(vgg, image=c, target=target, options=GradientOptions(reduce="sum")).values
                        for c in copies], axis=0)
    np.testing.assert_allclose(smooth.values, expected, rtol=1e-5, atol=1e-7)
    assert smooth.signed and smooth.extra["sigma_px"] == pytest.approx(12.75)


def test_linear_model_smoothgrad_is_its_gradient_at_any_noise():
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    image = np.random.default_rng(2).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    target = ExplainTarget(class_index=0)
    smooth = smoothgrad(model, image=image, target=target, options=SmoothGradOptions(samples=4, noise=0.5))
    np.testing.assert_allclose(smooth.values, gradient(model, image=image, target=target).values, rtol=1e-6)


def test_seed_makes_it_reproducible_and_options_are_validated(vgg):
    image = np.random.default_rng(4).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    target = ExplainTarget(class_index=0)
    a, b, c = (smoothgrad(vgg, image=image, target=target, options=SmoothGradOptions(samples=4, seed=s)).values
               for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for name, value in (("samples", 0), ("noise", 1.5), ("noise", -0.1), ("reduce", "mean"), ("chunk", 0)):
        with pytest.raises(InvalidRequest) as info:
            SmoothGradOptions(**{name: value})
        assert info.value.field == name
