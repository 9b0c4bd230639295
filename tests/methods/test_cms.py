from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from faceaudit.alignment import LandmarkAligner, PreAligned, mean_face_68
from faceaudit.errors import InvalidRequest
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.cms import CmsAccumulator, cms, reproject
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.testing.zoo import planted_region_classifier
from tests.alignment.warping import rotation, warp_points
from tests.conftest import prepared

OPTIONS = CisOptions(patch=3, stride=2)
OPTION_VALUES = dataclasses.asdict(OPTIONS)


@pytest.fixture
def model():
    return prepared(planted_region_classifier(height=24, width=24, box=(6, 18, 6, 18)), {"kind": "classifier"})


def cis_map(values: np.ndarray, **changes) -> SaliencyMap:
    """A CIS map as `cis` returns it, without running a model."""
    fields = {"values": values, "method": "cis", "options": OPTION_VALUES, "target": {"class_index": 0},
              "model_sha256": "0" * 64, "spec": {}, "seed": None, "timings": {"total_s": 0.5, "runtime_s": 0.25},
              "forward_passes": 7, "frame": "canonical"}
    return SaliencyMap(**{**fields, **changes})


def test_cms_is_the_mean_of_the_cis_maps(model, faces):
    images = list(faces(4, 24, 24))
    targets = [ExplainTarget(class_index=k % 2) for k in range(4)]
    maps = [cis(model, image=image, target=target, options=OPTIONS) for image, target in zip(images, targets)]
    calls = []
    result = cms(model, images=images, targets=iter(targets), options=OPTIONS,
                 progress=lambda *call: calls.append(call))
    expected = sum(m.values.astype(np.float64) for m in maps) / 4
    np.testing.assert_allclose(result.values, expected, rtol=1e-6, atol=1e-9)
    assert (result.method, result.frame, result.extra["images"]) == ("cms", "canonical", 4)
    assert result.forward_passes == sum(m.forward_passes for m in maps)
    assert result.options == dataclasses.asdict(OPTIONS)
    assert result.target == {"per_image": True}  # classes 0 and 1
    assert calls == [(1, 4, "cms"), (2, 4, "cms"), (3, 4, "cms"), (4, 4, "cms")]


def test_accumulator_result_is_the_mean_with_one_target():
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(5)]
    accumulator = CmsAccumulator()
    for v in values:
        accumulator.add(cis_map(v))
    result = accumulator.result()
    np.testing.assert_allclose(result.values, np.mean(np.stack(values).astype(np.float64), axis=0), rtol=1e-6)
    assert result.target == {"class_index": 0}
    assert result.timings == {"total_s": 2.5, "runtime_s": 1.25}


def test_accumulator_memory_is_constant():
    accumulator = CmsAccumulator()
    rng = np.random.default_rng(0)

    def held() -> tuple[int, int]:
        arrays = [v for v in vars(accumulator).values() if isinstance(v, np.ndarray)]
        return len(arrays), sum(a.nbytes for a in arrays)

    accumulator.add(cis_map(rng.normal(size=(64, 64)).astype(np.float32)))
    first = held()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(1000):
        accumulator.add(cis_map(rng.normal(size=(64, 64)).astype(np.float32)))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert first[0] <= 2 and held() == first
    assert grown < 64 * 64 * 4  # less than one map for 1000 maps
    assert accumulator.count == 1001


@pytest.mark.parametrize("other", [
    cis_map(np.zeros((5, 5), np.float32)),
    cis_map(np.zeros((6, 5), np.float32), options={**OPTION_VALUES, "patch": 5}),
    cis_map(np.zeros((6, 5), np.float32), model_sha256="1" * 64),
    cis_map(np.zeros((6, 5), np.float32), method="occlusion", frame="input"),
])
def test_maps_of_another_kind_are_refused(other):
    accumulator = CmsAccumulator()
    accumulator.add(cis_map(np.zeros((6, 5), np.float32)))
    with pytest.raises(InvalidRequest) as info:
        accumulator.add(other)
    assert info.value.field == "saliency_map"


def test_mismatched_inputs_name_the_field(model, faces):
    images = list(faces(2, 24, 24))
    cases = [
        ({"targets": [ExplainTarget(class_index=0)]}, "targets"),
        ({"targets": [ExplainTarget(class_index=0)] * 3}, "targets"),
        ({"targets": [ExplainTarget(class_index=0)] * 2,
          "correspondences": [PreAligned((24, 24)).correspond(images[0])] * 3}, "correspondences"),
        ({"images": [], "targets": []}, "images"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidRequest) as info:
            cms(model, **{"images": images, "options": OPTIONS, **kwargs})
        assert info.value.field == field


def test_correspondences_set_the_canonical_frame(model, faces):
    images = list(faces(2, 24, 24))
    result = cms(model, images=iter(images), targets=[ExplainTarget(class_index=0)] * 2, options=OPTIONS,
                 correspondences=(PreAligned((48, 48)).correspond(image) for image in images))
    assert result.values.shape == (48, 48)
    assert result.extra["images"] == 2


def test_reprojected_canonical_box_lands_on_the_warped_box():
    matrix = rotation(-20.0, scale=1.2, shear=0.1)
    shift = np.array([35.5, 35.5]) - matrix @ np.array([23.5, 23.5])
    template = mean_face_68((48, 48), padding=0.05)
    correspondence = LandmarkAligner(template, (48, 48), margin=0.2).correspond(
        np.zeros((72, 72, 3)), warp_points(template, matrix, shift))
    box = np.zeros((48, 48), np.float32)
    box[12:36, 12:36] = 1.0
    on_input = reproject(cis_map(box, method="cms"), correspondence)
    assert on_input.shape == (72, 72)
    rows, cols = np.indices((72, 72))
    canonical_xy = warp_points(np.column_stack([cols.ravel(), rows.ravel()]) - shift, np.linalg.inv(matrix), 0.0)

    def in_square(low: float, high: float) -> np.ndarray:
        """Input pixels whose canonical position lies in [low, high)²."""
        return ((canonical_xy >= low) & (canonical_xy < high)).all(axis=1).reshape(72, 72)

    warped_box, drawn = in_square(11.5, 35.5), on_input > 0.5
    assert (drawn & warped_box).sum() / (drawn | warped_box).sum() > 0.95  # IoU
    np.testing.assert_allclose(on_input[in_square(13, 34)], 1.0, atol=1e-6)  # > 1 px inside the edge
    assert (on_input[~in_square(10, 37)] == 0).all()  # > 1 px outside
    with pytest.raises(InvalidRequest) as info:
        reproject(cis_map(box, frame="input"), correspondence)
    assert info.value.field == "cms_map"
