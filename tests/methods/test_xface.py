"""X-Face against brute-force references (onnxruntime run directly) and planted ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods import xface as xface_module
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.occlusion import OcclusionOptions, occlusion
from faceaudit.methods.xface import XFaceOptions, xface
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_occlusion import (
    PLANTED_BOX, PLANTED_PATCH, PLANTED_SIZE, Box, box_share, brute_map, cosine, fill_image, occlude, run_onnx,
)


@pytest.fixture
def linear_embedding():
    proto = zoo.linear_classifier(height=8, width=8, classes=6, seed=5)
    return proto, prepared(proto, {"kind": "embedding"})


@pytest.mark.parametrize("contrastive", [False, True])
def test_both_mode_equals_brute_force(faces, linear_embedding, contrastive):
    proto, model = linear_embedding
    probe, mate, non_mate = faces(3, 8, 8)
    run = run_onnx(proto)

    def similarity(box: Box | None, other: np.ndarray) -> float:
        # Each face is filled with its own mean colour, at the same place.
        pair = [occlude(face, fill_image(face, "mean"), box) for face in (probe, other)]
        return cosine(*run(np.stack(pair)))

    def score(box: Box | None) -> float:
        return similarity(box, mate) - (similarity(box, non_mate) if contrastive else 0.0)

    target = ExplainTarget(mate=mate, non_mate=non_mate if contrastive else None)
    result = xface(model, image=probe, target=target, options=XFaceOptions(patch=3, stride=2, fill="mean", mode="both"))
    np.testing.assert_allclose(result.values, brute_map(score, 8, 8, 3, 2), atol=1e-5, rtol=0)
    faces_per_window = 3 if contrastive else 2
    assert result.extra["windows"] == 16 and result.forward_passes == faces_per_window * 17
    assert result.signed == contrastive


def test_probe_mode_is_pair_occlusion(faces, linear_embedding):
    _, model = linear_embedding
    probe, mate, non_mate = faces(3, 8, 8)
    target = ExplainTarget(mate=mate, non_mate=non_mate)
    values = dict(patch=3, stride=2, fill="blur", blur_sigma=2.0, chunk=4)
    expected = occlusion(model, image=probe, target=target, options=OcclusionOptions(**values)).values
    result = xface(model, image=probe, target=target, options=XFaceOptions(mode="probe", **values))
    np.testing.assert_array_equal(result.values, expected)
    assert result.method == "xface" and result.options["mode"] == "probe"


def test_planted_region_holds_the_both_mode_mass(faces, rng):
    proto = zoo.planted_region_embedding(height=PLANTED_SIZE, width=PLANTED_SIZE, box=PLANTED_BOX)
    probe, mate = faces(2, PLANTED_SIZE, PLANTED_SIZE)
    result = xface(prepared(proto, {"kind": "embedding"}), image=probe, target=ExplainTarget(mate=mate),
                   options=XFaceOptions(patch=PLANTED_PATCH, stride=1, mode="both"))
    assert box_share(result.values, PLANTED_BOX) >= 0.9
    assert box_share(rng.uniform(0, 1, result.values.shape), PLANTED_BOX) < 0.9


def test_contrastive_both_map_vanishes_when_the_non_mate_is_the_mate(faces, linear_embedding):
    _, model = linear_embedding
    probe, mate = faces(2, 8, 8)
    options = XFaceOptions(patch=3, stride=2, mode="both")
    result = xface(model, image=probe, target=ExplainTarget(mate=mate, non_mate=mate.copy()), options=options)
    plain = xface(model, image=probe, target=ExplainTarget(mate=mate), options=options)
    np.testing.assert_allclose(result.values, 0.0, atol=1e-6)
    assert np.abs(plain.values).max() > 1e-2


def test_chunk_size_does_not_change_the_both_map(faces, linear_embedding):
    _, model = linear_embedding
    probe, mate, non_mate = faces(3, 8, 8)
    target = ExplainTarget(mate=mate, non_mate=non_mate)
    options = [XFaceOptions(patch=3, stride=1, mode="both", chunk=chunk) for chunk in (1, 64)]
    maps = [xface(model, image=probe, target=target, options=o).values for o in options]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6, rtol=0)


def test_progress_reaches_the_total_in_both_mode(faces, linear_embedding):
    _, model = linear_embedding
    probe, mate = faces(2, 8, 8)
    calls: list[tuple[int, int, str]] = []
    result = xface(model, image=probe, target=ExplainTarget(mate=mate),
                   options=XFaceOptions(patch=4, stride=2, mode="both", chunk=3), progress=lambda *call: calls.append(call))
    done = [c[0] for c in calls]
    assert done == sorted(set(done)) and done[-1] == calls[-1][1] == result.forward_passes == 2 * (9 + 1)
    assert len(calls) == 3 and {c[2] for c in calls} == {"xface"}


def test_classifier_target_is_refused(faces):
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    with pytest.raises(InvalidRequest) as info:
        xface(model, image=faces(1, 8, 8)[0], target=ExplainTarget(class_index=0),
              options=XFaceOptions(patch=3, stride=2))
    assert info.value.field == "target"


def test_missing_mate_is_refused(faces, linear_embedding):
    _, model = linear_embedding
    with pytest.raises(InvalidRequest) as info:
        xface(model, image=faces(1, 8, 8)[0], target=ExplainTarget(),
              options=XFaceOptions(patch=3, stride=2, mode="both"))
    assert info.value.field == "target"


@pytest.mark.parametrize(("values", "field"), [
    ({"mode": "all"}, "mode"), ({"patch": 0}, "patch"), ({"stride": 0}, "stride"), ({"fill": "noise"}, "fill"),
    ({"fill": "constant"}, "constant"), ({"chunk": 0}, "chunk"),
])
def test_bad_options_name_the_option(values, field):
    with pytest.raises(InvalidRequest) as info:
        XFaceOptions(**values)
    assert info.value.field == field


def test_patch_larger_than_the_image_is_refused(faces, linear_embedding):
    _, model = linear_embedding
    probe, mate = faces(2, 8, 8)
    with pytest.raises(InvalidRequest) as info:
        # the default patch, 14 px, is larger than the 8×8 face
        xface(model, image=probe, target=ExplainTarget(mate=mate), options=XFaceOptions(mode="both"))
    assert info.value.field == "patch"


def test_documented_defaults_are_the_real_ones():
    defaults = XFaceOptions()
    for name in ("patch", "stride", "fill", "mode", "chunk"):
        assert f"{name}={getattr(defaults, name)}" in xface_module.__doc__
