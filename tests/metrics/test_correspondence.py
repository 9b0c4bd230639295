"""Correspondence Δ_l against a naive double loop, and on a planted model where one part is consistent."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from faceaudit.demo import FaceParams, render, sample_identity
from faceaudit.engine.prepare import prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest
from faceaudit.metrics.common import GamePoint
from faceaudit.metrics.correspondence import CorrespondenceOptions, correspondence, sign_distances
from faceaudit.models import load_model, resolve_spec
from tests.conftest import prepared

DEMO_MODELS = Path(__file__).resolve().parents[2] / "service" / "faceaudit" / "demo" / "models"

SPEC = {"kind": "embedding", "scale": 1.0}  # the model sees the pixel values themselves


def grid_net(size: int) -> onnx.ModelProto:
    """pixels = input · 1 (the image itself); cells = AveragePool 4×4 stride 4 (a (3, size/4, size/4) grid)."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Mul", ["input", "one"], ["pixels"]),
             helper.make_node("AveragePool", ["pixels"], ["cells"], kernel_shape=[4, 4], strides=[4, 4])]
    graph = helper.make_graph(
        nodes, "grid", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("cells", TensorProto.FLOAT, ["N", 3, size // 4, size // 4])], initializer=[one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def box(shape: tuple[int, int], top: int, left: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + h, left : left + w] = True
    return mask


def test_delta_equals_a_naive_double_loop_over_image_pairs() -> None:
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    masks = [box((8, 8), 1, 2, 3, 2), box((8, 8), 2, 2, 3, 2), box((8, 8), 1, 3, 3, 2), box((8, 8), 4, 4, 3, 2)]
    options = CorrespondenceOptions(layers=("pixels",), tolerance=0.0, random_trials=1)
    result = correspondence(prepared(grid_net(8), SPEC), images=images, parts={"part": masks}, options=options)
    # ε = x − x̃ in model space = (pixel − 127.5) inside the box, exactly 0 outside; features (3, 8, 8) flattened.
    signs = [np.sign(np.where(m[..., None], im - 127.5, 0.0)).transpose(2, 0, 1).reshape(-1) for im, m in zip(images, masks)]
    ordered = [np.count_nonzero(signs[i] != signs[j]) for i, j in itertools.permutations(range(4), 2)]
    fractions = np.array(ordered) / signs[0].size
    curve = result.curves["part"]
    assert curve["delta"] == [pytest.approx(fractions.mean())]
    assert curve["delta_std"] == [pytest.approx(fractions.std())]
    assert curve["hamming_sum"] == [pytest.approx(sum(ordered))]  # eq. 1 itself
    assert result.summary["part"] == {"pixels": curve["delta"][0]}
    assert result.forward_passes == 4 * (1 + 1 + 1)


def test_sign_distances_counts_differing_signs_with_zero_as_a_sign() -> None:
    eps = np.array([[1.0, -2.0, 0.0, 1e-9], [1.0, 2.0, 0.0, -1e-9], [-1.0, 0.0, 3.0, 0.0]])
    np.testing.assert_allclose(sign_distances(eps), [1 / 4 + 1 / 4, 4 / 4, 4 / 4])
    np.testing.assert_allclose(sign_distances(eps, tolerance=1e-6), [1 / 4, 3 / 4, 3 / 4])


def planted_faces(n: int = 6) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bright random 'skin' (150..255) with a dark 'eye' (10..40) filling exactly grid cell (1, 1), rows/cols 4..7."""
    rng = np.random.default_rng(11)
    images = rng.uniform(150, 255, (n, 16, 16, 3)).astype(np.float32)
    images[:, 4:8, 4:8] = rng.uniform(10, 40, (n, 4, 4, 3))
    return images, [box((16, 16), 4, 4, 4, 4)] * n


def test_a_consistently_placed_part_corresponds_better_than_random_occlusions() -> None:
    # Occluding the eye with grey raises exactly the 3 features of cell (1, 1) in every face: identical
    # sign patterns, Δ = 0. Random 4×4 boxes land on different cells per face: Δ > 0 (the part has the
    # tighter correspondence, i.e. the lower Δ).
    images, eyes = planted_faces()
    points: list[GamePoint] = []
    result = correspondence(prepared(grid_net(16), SPEC), images=images, parts={"eye": eyes},
                            options=CorrespondenceOptions(layers=("cells",), random_trials=3), on_point=points.append)
    assert result.curves["eye"]["delta"] == [0.0]
    assert result.curves["random"]["delta"][0] > 0.02
    assert [(p.series, p.index) for p in points] == [("eye", 0), ("random", 0)]
    again = correspondence(prepared(grid_net(16), SPEC), images=images, parts={"eye": eyes},
                           options=CorrespondenceOptions(layers=("cells",), random_trials=3))
    assert again.curves == result.curves  # seeded


def test_parts_are_played_in_name_order_whatever_order_they_are_given_in() -> None:
    """The random baseline draws part by part: two orders of the same parts give the same numbers."""
    images, eyes = planted_faces()
    mouths = [np.roll(eye, 8, axis=0) for eye in eyes]
    options = CorrespondenceOptions(layers=("cells",), random_trials=2)
    model = prepared(grid_net(16), SPEC)
    points: list[GamePoint] = []
    first = correspondence(model, images=images, parts={"mouth": mouths, "eye": eyes}, options=options,
                           on_point=points.append)
    second = correspondence(model, images=images, parts={"eye": eyes, "mouth": mouths}, options=options)
    assert first.curves == second.curves and list(first.curves) == ["eye", "mouth", "random"]
    assert [p.series for p in points] == ["eye", "mouth", "random"]


def test_mask_region_occludes_only_the_mask_and_box_its_bounding_box() -> None:
    # A bright and a dark face: ε = x − grey has opposite signs wherever pixels are occluded, so Δ of the
    # one pair = occluded coordinates / all. Mask: the diagonal's 8 pixels; box: its 8×8 bounding box.
    images = np.stack([np.full((16, 16, 3), 200.0), np.full((16, 16, 3), 50.0)]).astype(np.float32)
    diagonal = np.eye(16, dtype=bool)
    diagonal[8:] = False
    model = prepared(grid_net(16), SPEC)
    for region, occluded in [("mask", 8), ("box", 64)]:
        result = correspondence(model, images=images, parts={"d": [diagonal, diagonal]},
                                options=CorrespondenceOptions(layers=("pixels",), region=region, random_trials=1))
        assert result.curves["d"]["delta"] == [pytest.approx(occluded / 256)], region
        # Random positions differ per face: the signs differ on the union of the two occluded areas.
        assert occluded / 256 <= result.curves["random"]["delta"][0] <= 2 * occluded / 256, region


@pytest.mark.parametrize(("options", "field"), [
    ({"region": "circle"}, "region"), ({"random_trials": 0}, "random_trials"), ({"tolerance": -1.0}, "tolerance"),
    ({"tolerance": 1.0}, "tolerance"), ({"seed": -1}, "seed"), ({"fill": "paint"}, "fill"),
    ({"constant": (300.0,)}, "constant"), ({"fill": "zero", "constant": (3.0,)}, "constant"), ({"pooling": "sum"}, "pooling"),
    ({"layers": ("x", "x")}, "layers"),
])
def test_options_are_validated_naming_the_option(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        CorrespondenceOptions(**options)  # type: ignore[arg-type]
    assert err.value.field == field


def test_another_fill_drops_the_default_grey() -> None:
    assert CorrespondenceOptions(fill="zero").constant is None
    assert CorrespondenceOptions().baseline(np.zeros((2, 2, 3), np.float32)).tolist() == [[[127.5] * 3] * 2] * 2


def test_bad_inputs_name_the_field() -> None:
    images, eyes = planted_faces(3)
    model = prepared(grid_net(16), SPEC)
    cases = [
        ({"images": images[:1], "parts": {"eye": eyes[:1]}}, "images"),
        ({"parts": {}}, "parts"),
        ({"parts": {"random": eyes}}, "parts"),
        ({"parts": {"eye": eyes[:2]}}, "parts[eye]"),
        ({"parts": {"eye": 3}}, "parts[eye]"),
        ({"parts": {"eye": [eyes[0], eyes[1], np.zeros((16, 16), bool)]}}, "parts[eye][2]"),
        ({"parts": {"eye": [eyes[0], eyes[1], np.ones((8, 8), bool)]}}, "parts[eye][2]"),
        ({"parts": {"eye": [eyes[0], eyes[1], np.full((16, 16), 0.5)]}}, "parts[eye][2]"),
    ]
    for inputs, field in cases:
        kwargs: dict[str, object] = {"images": images, "parts": {"eye": eyes}, **inputs}
        with pytest.raises(InvalidRequest) as err:
            correspondence(model, options=CorrespondenceOptions(layers=("cells",)), **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field, inputs


def test_demo_embedding_model_first_layer_corresponds_for_every_part() -> None:
    """End to end on the bundled embedding model with the renderer's part masks (frontal faces, 6 identities)."""
    loaded = load_model(DEMO_MODELS / "embedding.onnx")
    model = prepare(loaded, resolve_spec(loaded), RuntimeOptions(threads=2))
    rng = np.random.default_rng([20261125, 3])
    faces = [render(FaceParams(sample_identity(rng)), 64, seed=k) for k in range(6)]
    parts = {name: [face.masks[name] for face in faces] for name in ("eyes", "nose", "mouth")}
    result = correspondence(model, images=np.stack([f.image for f in faces]).astype(np.float32), parts=parts,
                            options=CorrespondenceOptions(random_trials=2))
    assert set(result.curves) == {"eyes", "nose", "mouth", "random"}
    for series, curve in result.curves.items():
        assert len(curve["delta"]) == len(result.options["layers"])
        assert all(0.0 <= d <= 1.0 for d in curve["delta"]), series
    # The stem's features are local: the same part occluded moves the same coordinates in every face.
    for name in parts:
        assert result.curves[name]["delta"][0] < result.curves["random"]["delta"][0], name
