from __future__ import annotations

import dataclasses
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.spatial import Delaunay

from faceaudit.alignment import LandmarkAligner, PreAligned, mean_face_68
from faceaudit.alignment.correspondence import Correspondence
from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.engine.scorer import ClassTarget, Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods import cis as cis_module
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.common import ExplainTarget, options_from
from faceaudit.testing.zoo import linear_classifier, planted_region_classifier, planted_region_embedding
from tests.alignment.warping import rotation, warp_image, warp_points
from tests.conftest import prepared

CLASSIFIER = {"kind": "classifier"}


def algorithm_1(model, image, class_index, input_xy, canonical_xy, patch, canonical_patch, canonical_shape):
    """John et al. Algorithm 1, one forward pass and one per-pixel mask per point, zero fill."""
    scorer = Scorer(model, ClassTarget(class_index))

    def phi(face: np.ndarray) -> float:
        return float(scorer.score([face[None]])[0])

    rows, cols = np.indices(image.shape[:2])
    canonical_rows, canonical_cols = np.indices(canonical_shape)
    total, count = np.zeros(canonical_shape), np.zeros(canonical_shape)
    original = phi(image)
    for (x_i, y_i), (x_f, y_f) in zip(input_xy, canonical_xy):
        occluded = image.copy()
        occluded[(np.abs(cols - x_i) < patch / 2) & (np.abs(rows - y_i) < patch / 2)] = 0.0  # eq. 2
        drop = original - phi(occluded)
        window = (np.abs(canonical_cols - x_f) < canonical_patch / 2) & (np.abs(canonical_rows - y_f) < canonical_patch / 2)
        total[window] += drop
        count[window] += 1
    total[count == 0] = 0
    count[count == 0] = 1
    return total / count


@pytest.mark.parametrize(("canonical", "patch", "stride", "canonical_patch"), [
    ((12, 12), 3, 1, 3),  # identity frame
    ((12, 12), 4, 3, 4),  # even patch, gaps between windows
    ((24, 24), 3, 3, 6),  # canonical frame twice the input: patch scaled by 2, points off the pixel grid
])
def test_cis_equals_brute_force_algorithm_1(faces, canonical, patch, stride, canonical_patch):
    model = prepared(linear_classifier(height=12, width=12), CLASSIFIER, exact=True)  # one image per run
    image = faces(1, 12, 12)[0]
    correspondence = PreAligned(canonical).correspond(image)
    result = cis(model, image=image, target=ExplainTarget(class_index=2), correspondence=correspondence,
                 options=CisOptions(patch=patch, stride=stride, chunk=5))
    input_xy, canonical_xy = correspondence.points(stride)
    expected = algorithm_1(model, image, 2, input_xy, canonical_xy, patch, canonical_patch, canonical)
    assert result.frame == "canonical" and result.values.shape == canonical
    np.testing.assert_array_equal(result.values, expected.astype(np.float32))
    assert result.forward_passes == len(input_xy) + 1


def test_uncovered_pixels_are_zero(faces):
    model = prepared(linear_classifier(height=12, width=12), CLASSIFIER)
    result = cis(model, image=faces(1, 12, 12)[0], target=ExplainTarget(class_index=0),
                 options=CisOptions(patch=3, stride=5))
    near_point = np.isin(np.arange(12), [0, 1, 4, 5, 6, 9, 10, 11])  # points at 0, 5, 10; windows ±1 px
    covered = near_point[:, None] & near_point[None, :]
    assert (~covered).any()
    assert (result.values[~covered] == 0).all()
    assert (result.values[covered] != 0).mean() > 0.9


def _positive_mass_inside(values: np.ndarray, box: tuple[int, int, int, int]) -> float:
    positive = np.maximum(values, 0.0)
    top, bottom, left, right = box
    return float(positive[top:bottom, left:right].sum() / positive.sum())


BOX = (12, 36, 12, 36)  # top, bottom, left, right of the planted region in a 48x48 frame


def test_planted_region_holds_the_cis_mass(faces):
    model = prepared(planted_region_classifier(height=48, width=48, box=BOX), CLASSIFIER)
    result = cis(model, image=faces(1, 48, 48)[0], target=ExplainTarget(class_index=1),
                 options=CisOptions(patch=3, stride=2))
    assert _positive_mass_inside(result.values, BOX) >= 0.9
    assert _positive_mass_inside(np.random.default_rng(0).uniform(size=(48, 48)), BOX) < 0.9


def masked_classifier(mask: np.ndarray, seed: int = 0) -> onnx.ModelProto:
    """sigmoid(W · flatten(x ⊙ mask) / |mask| - 1), W ≥ 0: scores depend only on the masked pixels."""
    height, width = mask.shape
    weights = np.random.default_rng(seed).uniform(0.0, 2.0, (2, 3 * height * width)) / mask.sum()
    nodes = [
        helper.make_node("Mul", ["input", "mask"], ["masked"]),
        helper.make_node("Flatten", ["masked"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"], transB=1),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes, "masked_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(mask.astype(np.float32)[None, None], "mask"),
                     numpy_helper.from_array(weights.astype(np.float32), "weights"),
                     numpy_helper.from_array(np.full(2, -1.0, np.float32), "bias")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_cis_of_a_warped_face_lands_in_the_canonical_region(faces):
    """The region is planted on the canonical face; the face reaches the model warped by a known
    affine map. Tolerance 80 % (not 90 %): input squares are axis-aligned while the warped region
    is rotated and sheared, so squares at its edge straddle it more than in the canonical frame."""
    matrix = rotation(15.0, scale=1.15, shear=0.1)
    shift = np.array([35.5, 35.5]) - matrix @ np.array([23.5, 23.5])  # canonical centre -> input centre
    rows, cols = np.indices((72, 72))
    canonical_xy = warp_points(np.column_stack([cols.ravel(), rows.ravel()]) - shift, np.linalg.inv(matrix), 0.0)
    top, bottom, left, right = BOX
    in_box = ((canonical_xy[:, 0] >= left - 0.5) & (canonical_xy[:, 0] < right - 0.5)
              & (canonical_xy[:, 1] >= top - 0.5) & (canonical_xy[:, 1] < bottom - 0.5))
    model = prepared(masked_classifier(in_box.reshape(72, 72)), CLASSIFIER)
    image = np.clip(warp_image(faces(1, 48, 48)[0], matrix, shift, (72, 72)), 0, 255)
    template = mean_face_68((48, 48), padding=0.05)
    correspondence = LandmarkAligner(template, (48, 48), margin=0.2).correspond(
        image, warp_points(template, matrix, shift))
    result = cis(model, image=image, target=ExplainTarget(class_index=0), correspondence=correspondence,
                 options=CisOptions(patch=3, stride=2))
    assert result.values.shape == (48, 48)
    assert _positive_mass_inside(result.values, BOX) >= 0.8
    # Control: without alignment the map stays on the input frame, where the box is elsewhere.
    plain = cis(model, image=image, target=ExplainTarget(class_index=0), options=CisOptions(patch=3, stride=2))
    assert _positive_mass_inside(plain.values[:48, :48], BOX) < 0.8


def test_contrastive_map_is_mate_map_minus_non_mate_map(faces):
    model = prepared(planted_region_embedding(height=16, width=16, box=(4, 12, 4, 12)), {"kind": "embedding"})
    probe, mate, non_mate = faces(3, 16, 16)
    options = CisOptions(patch=3, stride=2)
    both = cis(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate), options=options)
    against_mate = cis(model, image=probe, target=ExplainTarget(mate=mate), options=options)
    against_non_mate = cis(model, image=probe, target=ExplainTarget(mate=non_mate), options=options)
    assert both.signed and not against_mate.signed
    scale = np.abs(against_mate.values).max()
    np.testing.assert_allclose(both.values, against_mate.values - against_non_mate.values, atol=1e-5 * scale)


def test_occluded_images_stream_in_chunks(faces):
    model = prepared(linear_classifier(height=12, width=12), CLASSIFIER)
    calls = []
    result = cis(model, image=faces(1, 12, 12)[0], target=ExplainTarget(class_index=0),
                 options=CisOptions(patch=3, stride=1, chunk=10), progress=lambda *call: calls.append(call))
    points = 144
    assert result.forward_passes == points + 1
    assert [done for done, _, _ in calls] == [*range(11, points + 1, 10), points + 1]
    assert {(total, phase) for _, total, phase in calls} == {(points + 1, "cis")}


@pytest.mark.parametrize(("values", "field"), [
    ({"patch": 0}, "patch"), ({"patch": 2.5}, "patch"), ({"stride": 0}, "stride"), ({"chunk": True}, "chunk"),
    ({"fill": "noise"}, "fill"), ({"fill": "constant"}, "constant"), ({"blur_sigma": 0.0}, "blur_sigma"),
])
def test_bad_options_name_the_option(values, field):
    with pytest.raises(InvalidRequest) as info:
        CisOptions(**values)
    assert info.value.field == field


def test_bad_requests_name_the_field(faces):
    model = prepared(linear_classifier(height=12, width=12), CLASSIFIER)
    image, target = faces(1, 12, 12)[0], ExplainTarget(class_index=0)
    cases = [
        ({"options": CisOptions(patch=13)}, "patch"),
        ({"correspondence": PreAligned((12, 12)).correspond(np.zeros((10, 12, 3)))}, "correspondence"),
        ({"target": ExplainTarget(mate=image)}, "target"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidRequest) as info:
            cis(model, **{"image": image, "target": target, **kwargs})
        assert info.value.field == field


def test_a_stride_whose_grid_misses_the_face_is_named_with_the_largest_that_does_not(faces):
    """A landmark correspondence covers the face, not the frame: on a 32×32 frame a stride of 20 puts
    its grid points at pixels 5 and 25, off the face. The error names the stride and the largest smaller
    stride that finds points, which maps; every stride between them is refused the same way."""
    model = prepared(linear_classifier(height=32, width=32), CLASSIFIER)
    image, target = faces(1, 32, 32)[0], ExplainTarget(class_index=0)
    template = arcface_for_frame((32, 32))
    correspondence = LandmarkAligner(template, (32, 32), margin=0.5).correspond(image, template)

    def refusal(stride: int) -> InvalidRequest:
        with pytest.raises(InvalidRequest) as info:
            cis(model, image=image, target=target, correspondence=correspondence,
                options=CisOptions(patch=3, stride=stride))
        return info.value

    error = refusal(20)
    assert error.field == "stride"
    suggested = int(re.search(r"e\.g\. (\d+)", str(error)).group(1))
    assert 1 <= suggested < 20
    assert cis(model, image=image, target=target, correspondence=correspondence,
               options=CisOptions(patch=3, stride=suggested)).extra["points"] > 0
    assert all(refusal(stride).field == "stride" for stride in range(suggested + 1, 20))


def test_a_correspondence_that_maps_the_face_off_the_image_is_named(faces):
    """Not a stride problem: no canonical pixel at all maps onto the image."""
    model = prepared(linear_classifier(height=12, width=12), CLASSIFIER)
    corners = np.array([[-0.5, -0.5], [11.5, -0.5], [-0.5, 11.5], [11.5, 11.5]])
    off_image = Correspondence(Delaunay(corners), corners + 100.0, (12, 12), (12, 12))
    with pytest.raises(InvalidRequest) as info:
        cis(model, image=faces(1, 12, 12)[0], target=ExplainTarget(class_index=0), correspondence=off_image,
            options=CisOptions(patch=3, stride=1))
    assert info.value.field == "correspondence"


def test_documented_defaults_are_the_real_ones():
    defaults = {f.name: f.default for f in dataclasses.fields(CisOptions)}
    assert (defaults["patch"], defaults["stride"], defaults["fill"]) == (15, 4, "zero")
    doc = " ".join(cis_module.__doc__.split())
    assert 'patch=15 px' in doc and 'fill=zero' in doc and 'stride=4 canonical px' in doc
    assert options_from(CisOptions, {"patch": "9", "constant": "1,2,3", "fill": "constant"}) == CisOptions(
        patch=9, constant=(1.0, 2.0, 3.0), fill="constant")
