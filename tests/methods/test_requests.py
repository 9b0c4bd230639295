"""What the registry and the shared validation refuse: the checks a server relies on for user input."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods.common import CHUNK_BYTES, ExplainTarget, chunk_size
from faceaudit.methods.occlusion import OcclusionOptions
from faceaudit.methods.registry import explain
from faceaudit.testing import zoo

from tests.conftest import prepared


@pytest.fixture(scope="module")
def classifier():
    return prepared(zoo.planted_region_classifier(), {"kind": "classifier"})


@pytest.fixture
def face(rng):
    return rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("index", [1.7, "1", True, -1, 3])
def test_class_index_must_be_an_integer_class(classifier, face, index):
    with pytest.raises(InvalidRequest) as info:
        explain(classifier, "occlusion", image=face, target=ExplainTarget(class_index=index), options={"patch": 8})
    assert info.value.field == "target"


@pytest.mark.parametrize(("method", "options", "field"), [
    (None, {}, "method"),
    ("occlusion", {"blur_sigma": None}, "blur_sigma"),
    ("occlusion", {"blur_sigma": [1, 2]}, "blur_sigma"),
    ("occlusion", {"fill": 3}, "fill"),
    ("occlusion", ["patch"], "options"),
])
def test_malformed_requests_name_the_field(classifier, face, method, options, field):
    with pytest.raises(InvalidRequest) as info:
        explain(classifier, method, image=face, target=ExplainTarget(class_index=0), options=options)
    assert info.value.field == field


def test_options_instances_are_accepted_and_unknown_context_refused(classifier, face):
    target = ExplainTarget(class_index=0)
    saliency = explain(classifier, "occlusion", image=face, target=target, options=OcclusionOptions(patch=8, stride=8))
    assert saliency.options["patch"] == 8
    with pytest.raises(InvalidRequest) as info:
        explain(classifier, "occlusion", image=face, target=target, correspondence=None)
    assert info.value.field == "correspondence"


def test_a_mate_of_the_wrong_shape_is_named_and_a_grey_mate_is_converted(face):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    with pytest.raises(InvalidRequest) as info:
        explain(model, "xface", image=face, target=ExplainTarget(mate=face[:16, :16]), options={"mode": "both"})
    assert info.value.field == "mate"
    grey = explain(model, "xface", image=face, target=ExplainTarget(mate=face[..., 0]), options={"mode": "both", "patch": 8})
    assert np.isfinite(grey.values).all()


def test_forward_pass_limit(face):
    model = prepared(zoo.linear_classifier(height=1200, width=1200), {"kind": "classifier"})
    big = np.zeros((1200, 1200, 3), np.float32)
    with pytest.raises(LimitExceeded, match="stride"):
        explain(model, "occlusion", image=big + 1, target=ExplainTarget(class_index=0), options={"patch": 1, "stride": 1})


def test_a_fill_equal_to_the_image_is_refused(classifier):
    black = np.zeros((32, 32, 3), np.float32)
    for method in ("occlusion", "cis"):
        with pytest.raises(InvalidRequest) as info:
            explain(classifier, method, image=black, target=ExplainTarget(class_index=0), options={"patch": 8})
        assert info.value.field == "fill"


def test_chunks_are_bounded_in_bytes():
    image = np.zeros((224, 224, 3), np.float32)
    assert chunk_size(4096, image) == CHUNK_BYTES // image.nbytes
    assert chunk_size(4096, image, copies=3) == CHUNK_BYTES // (3 * image.nbytes)
    assert chunk_size(8, image) == 8 and chunk_size(1, np.zeros((4096, 4096, 3), np.float32)) == 1


def test_batch_dependent_models_are_flagged_in_the_metadata(rng):
    model = prepared(zoo.dynamic_quantized_classifier(), {"kind": "classifier"})
    face = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)
    saliency = explain(model, "occlusion", image=face, target=ExplainTarget(class_index=0), options={"patch": 8})
    assert saliency.extra["batch"]["dependent"] and "exact=True" in saliency.extra["warning"]
    exact = prepared(zoo.dynamic_quantized_classifier(), {"kind": "classifier"}, exact=True)
    saliency = explain(exact, "occlusion", image=face, target=ExplainTarget(class_index=0), options={"patch": 8})
    assert "warning" not in saliency.extra and saliency.extra["max_batch"] == 1
