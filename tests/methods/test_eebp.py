"""Extended excitation backprop maps: equal to EBP on ReLU networks, unit mass with negative activations."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.ebp import EbpOptions, ebp
from faceaudit.methods.eebp import EebpOptions, eebp
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_ebp import box_share


@pytest.mark.parametrize("class_index", [0, 3, 7])
@pytest.mark.parametrize("smooth", [0.0, 0.02])
def test_equals_ebp_on_a_relu_network(class_index, smooth):
    """vgg_classifier: ReLU activations, non-negative input after the model's preprocessing: eebp == ebp."""
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    target = ExplainTarget(class_index=class_index)
    expected = ebp(model, image=image, target=target, options=EbpOptions(smooth=smooth))
    result = eebp(model, image=image, target=target, options=EebpOptions(smooth=smooth))
    np.testing.assert_allclose(result.values, expected.values, rtol=1e-6, atol=1e-12)
    # ebp runs the compiled (float32) backward, eebp the float64 numpy engine
    assert result.extra["mass_at_layer"] == pytest.approx(expected.extra["mass_at_layer"], rel=1e-6)
    assert result.method == "eebp"


def test_a_prelu_embedding_network_gets_a_unit_mass_map():
    """iresnet_embedding (PReLU, a residual Add, no ReLU before the embedding): every neuron's
    probability is non-negative and the mass reaches the input."""
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    result = eebp(model, image=image, target=ExplainTarget(mate=mate), options=EebpOptions(smooth=0.0))
    assert result.values.min() >= 0 and result.values.sum() == pytest.approx(1.0)
    assert result.extra["mass_at_layer"] == pytest.approx(1.0, abs=1e-6)
    plain = ebp(model, image=image, target=ExplainTarget(mate=mate), options=EbpOptions(smooth=0.0))
    assert not np.allclose(plain.values, result.values)


def test_planted_region_embedding_holds_the_mass():
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    image, mate = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    exact = eebp(model, image=image, target=ExplainTarget(mate=mate), options=EebpOptions(smooth=0.0))
    assert box_share(exact.values) == pytest.approx(1.0)


@pytest.mark.parametrize(("values", "field"), [({"smooth": -0.01}, "smooth"), ({"layer": ""}, "layer")])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        EebpOptions(**values)
    assert info.value.field == field
