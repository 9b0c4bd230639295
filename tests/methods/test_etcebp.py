"""Extended truncated contrastive EBP: equal to tcEBP on ReLU networks, unit mass on a PReLU embedding network."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.etcebp import EtcebpOptions, etcebp
from faceaudit.methods.tcebp import TcebpOptions, tcebp
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_ebp import box_share


@pytest.mark.parametrize("truncation", ["percentile", "mass"])
@pytest.mark.parametrize("contrast", ["dual", "others", 2])
def test_equals_tcebp_on_a_relu_network(truncation, contrast):
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    target = ExplainTarget(class_index=5)
    expected = tcebp(model, image=image, target=target, options=TcebpOptions(truncation=truncation, contrast=contrast))
    result = etcebp(model, image=image, target=target, options=EtcebpOptions(truncation=truncation, contrast=contrast))
    # tcebp runs the compiled (float32) backward, etcebp the float64 numpy engine
    np.testing.assert_allclose(result.values, expected.values, rtol=0, atol=1e-5 * expected.values.max())
    assert result.extra["epsilon"] == pytest.approx(expected.extra["epsilon"], rel=1e-5)
    assert result.method == "etcebp"


def test_prelu_embedding_network_with_a_non_mate():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    result = etcebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate),
                    options=EtcebpOptions(truncation="mass"))
    assert result.values.min() >= 0 and result.values.sum() == pytest.approx(1.0)
    assert result.extra["contrast"] == "non_mate"


def test_planted_region_embedding():
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    result = etcebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate),
                    options=EtcebpOptions(smooth=0.0))
    assert box_share(result.values) == pytest.approx(1.0)


@pytest.mark.parametrize(("values", "field"), [({"truncation": "x"}, "truncation"), ({"percentile": 100}, "percentile"),
                                               ({"mass": 0}, "mass")])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        EtcebpOptions(**values)
    assert info.value.field == field
