"""Extended contrastive EBP: equal to cEBP on ReLU networks (both forms, every contrast), unit mass
on a PReLU embedding network, options."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.cebp import CebpOptions, cebp
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.ecebp import EcebpOptions, ecebp
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_cebp import mlp_case
from tests.methods.test_ebp import box_share


@pytest.mark.parametrize("form", ["difference", "zhang"])
@pytest.mark.parametrize("contrast", [1, "others", "dual"])
def test_equals_cebp_on_relu_networks(form, contrast):
    vgg = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    mlp, mlp_image, *_ = mlp_case()
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    for model, probe in ((vgg, image), (mlp, mlp_image)):
        target = ExplainTarget(class_index=3)
        expected = cebp(model, image=probe, target=target, options=CebpOptions(form=form, contrast=contrast))
        result = ecebp(model, image=probe, target=target, options=EcebpOptions(form=form, contrast=contrast))
        # cebp runs the compiled (float32) backward, ecebp the float64 numpy engine
        np.testing.assert_allclose(result.values, expected.values, rtol=0, atol=1e-5 * expected.values.max())
        assert result.method == "ecebp" and result.extra["contrast"] == expected.extra["contrast"]


@pytest.mark.parametrize("with_non_mate", [True, False])
def test_prelu_embedding_network(with_non_mate):
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    target = ExplainTarget(mate=mate, non_mate=non_mate if with_non_mate else None)
    result = ecebp(model, image=image, target=target, options=EcebpOptions(smooth=0.0))
    assert result.values.min() >= 0 and result.values.sum() == pytest.approx(1.0)
    assert result.extra["contrast"] == ("non_mate" if with_non_mate else "dual of the mate")


def test_planted_region_embedding():
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    result = ecebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate),
                   options=EcebpOptions(smooth=0.0))
    assert box_share(result.values) == pytest.approx(1.0)


def test_a_map_layer_above_the_contrast_layer_is_refused():
    proto = zoo.vgg_classifier()
    model = prepared(proto, {"kind": "classifier"})
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    pooled = next(node.output[0] for node in proto.graph.node if node.op_type == "MaxPool")
    with pytest.raises(InvalidRequest) as info:
        ecebp(model, image=image, target=ExplainTarget(class_index=0),
              options=EcebpOptions(form="zhang", contrast_layer=pooled, layer="last_conv"))
    assert info.value.field == "layer"


@pytest.mark.parametrize(("values", "field"), [({"form": "other"}, "form"), ({"contrast": "all"}, "contrast"),
                                               ({"smooth": 1.0}, "smooth")])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        EcebpOptions(**values)
    assert info.value.field == field
