"""Guided Grad-CAM: the product of the guided backpropagation and Grad-CAM maps, one forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.gradcam import GradCamOptions, gradcam
from faceaudit.methods.guided_backprop import GuidedBackpropOptions, guided_backprop
from faceaudit.methods.guided_gradcam import GuidedGradCamOptions, guided_gradcam
from faceaudit.testing import zoo

from tests.conftest import prepared


@pytest.mark.parametrize("reduce", ["max_abs", "sum"])
def test_is_guided_backprop_times_the_upsampled_gradcam(reduce):
    proto = zoo.vgg_classifier()
    model = prepared(proto, {"kind": "classifier"})
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    target = ExplainTarget(class_index=6)
    first = next(node.output[0] for node in proto.graph.node if node.op_type == "Conv")
    for layer in ("last_conv", first):
        result = guided_gradcam(model, image=image, target=target,
                                options=GuidedGradCamOptions(layer=layer, reduce=reduce))
        guided = guided_backprop(model, image=image, target=target, options=GuidedBackpropOptions(reduce=reduce))
        cam = gradcam(model, image=image, target=target, options=GradCamOptions(layer=layer))
        # Grad-CAM's gradient at the layer and the guided signal at the pixels: one compiled run each
        assert result.extra["layer"] == cam.extra["layer"] and result.forward_passes == 2
        np.testing.assert_allclose(result.values, guided.values * cam.values, rtol=1e-5,
                                   atol=1e-6 * np.abs(result.values).max())
        assert np.abs(result.values).max() > 0 and result.signed == (reduce == "sum")
    assert (result.values == 0).mean() > (guided.values == 0).mean()  # Grad-CAM's ReLU zeroes whole regions


def test_embedding_contrasts_the_non_mate():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    alone = guided_gradcam(model, image=image, target=ExplainTarget(mate=mate))
    both = guided_gradcam(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate))
    scale = np.abs(alone.values).max()  # cosine gradients are tiny: compare relative to the map's scale
    assert scale > 0 and not np.allclose(alone.values / scale, both.values / scale)


@pytest.mark.parametrize(("values", "field"), [({"layer": ""}, "layer"), ({"reduce": "mean"}, "reduce")])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        GuidedGradCamOptions(**values)
    assert info.value.field == field
