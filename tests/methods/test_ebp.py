"""Excitation backprop maps: unit mass, the planted region, the layer and smoothing options."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.ebp import EbpOptions, ebp
from faceaudit.testing import zoo

from tests.conftest import prepared

BOX = (8, 16, 20, 28)  # the planted models' region (zoo default)


def box_share(values: np.ndarray) -> float:
    top, bottom, left, right = BOX
    return float(values[top:bottom, left:right].sum() / values.sum())


@pytest.mark.parametrize(("build", "kind"), [(zoo.planted_region_classifier, "classifier"),
                                             (zoo.planted_region_embedding, "embedding")])
def test_planted_region_holds_the_mass(build, kind):
    model = prepared(build(), {"kind": kind})
    image, mate = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    target = ExplainTarget(class_index=2) if kind == "classifier" else ExplainTarget(mate=mate)
    exact = ebp(model, image=image, target=target, options=EbpOptions(smooth=0.0))
    assert exact.values.sum() == pytest.approx(1.0) and box_share(exact.values) == pytest.approx(1.0)
    smoothed = ebp(model, image=image, target=target)  # σ = 0.64 px spreads the box's rim
    assert smoothed.values.sum() == pytest.approx(1.0) and box_share(smoothed.values) > 0.85


def test_relu_network_map_is_a_probability_distribution_and_depends_on_the_class():
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    first = ebp(model, image=image, target=ExplainTarget(class_index=0))
    second = ebp(model, image=image, target=ExplainTarget(class_index=7))
    for result in (first, second):
        assert result.values.min() >= 0 and result.values.sum() == pytest.approx(1.0)
        assert result.extra["mass_at_layer"] == pytest.approx(1.0)  # nothing lost on the way to the input
    assert not np.allclose(first.values, second.values)


def test_smoothing_is_a_gaussian_of_two_percent_of_the_width():
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(2).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    target = ExplainTarget(class_index=3)
    raw = ebp(model, image=image, target=target, options=EbpOptions(smooth=0.0)).values.astype(np.float64)
    for smooth in (0.02, 0.1):
        expected = gaussian_filter(raw, smooth * 32)
        np.testing.assert_allclose(ebp(model, image=image, target=target, options=EbpOptions(smooth=smooth)).values,
                                   expected / expected.sum(), rtol=1e-5, atol=1e-8)


def test_map_at_a_layer_is_upsampled_and_keeps_the_mass():
    proto = zoo.vgg_classifier()
    model = prepared(proto, {"kind": "classifier"})
    image = np.random.default_rng(3).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    pooled = next(node.output[0] for node in proto.graph.node if node.op_type == "MaxPool")
    result = ebp(model, image=image, target=ExplainTarget(class_index=5), options=EbpOptions(layer=pooled, smooth=0.0))
    assert result.extra["layer"] == pooled and result.extra["layer_size"] == [16, 16]
    assert result.extra["mass_at_layer"] == pytest.approx(1.0) and result.values.sum() == pytest.approx(1.0)
    at_input = ebp(model, image=image, target=ExplainTarget(class_index=5), options=EbpOptions(smooth=0.0))
    assert not np.allclose(result.values, at_input.values)


def test_the_non_mate_gets_no_seed():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    alone = ebp(model, image=image, target=ExplainTarget(mate=mate))
    both = ebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate))
    np.testing.assert_allclose(both.values, alone.values, rtol=1e-6, atol=1e-9)
    assert not both.signed


@pytest.mark.parametrize(("values", "field"), [({"smooth": -0.01}, "smooth"), ({"smooth": 0.6}, "smooth"),
                                               ({"smooth": float("nan")}, "smooth"), ({"layer": ""}, "layer")])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        EbpOptions(**values)
    assert info.value.field == field
