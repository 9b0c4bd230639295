"""Invariance curves: exact zeros where a layer is invariant by construction, the transforms' geometry by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.demo import FaceParams, render, sample_identity
from faceaudit.engine.prepare import prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods import common
from faceaudit.metrics import layer_features as lf
from faceaudit.metrics.common import GamePoint
from faceaudit.metrics.invariance import MAX_MAGNITUDES, InvarianceOptions, invariance, transformed
from faceaudit.metrics.registry import evaluate
from faceaudit.models import load_model, resolve_spec
from tests.conftest import prepared

DEMO_MODELS = Path(__file__).resolve().parents[2] / "service" / "faceaudit" / "demo" / "models"

SPEC = {"kind": "embedding", "scale": 1.0}
SIZE = 16


def conv_gap_net(seed: int = 0) -> onnx.ModelProto:
    """conv = Conv3x3(zero padding, random kernel and bias); gap = GlobalAveragePool(Relu(conv)); out = Flatten(gap).

    Relu(conv) is translation equivariant away from the border, so gap (its mean over positions) is
    translation invariant for images whose content stays a kernel radius away from the border on a flat
    background. Without the Relu, gap would be linear in the channel sums, hence invariant to any
    permutation of pixels (rotations by 90° included); with it, it sees the kernel's orientation.
    """
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["out"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_gap", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
        initializer=[numpy_helper.from_array(rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32), "w"),
                     numpy_helper.from_array(np.array([0.5, -0.2, 0.1, 1.0], np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def flatten_net() -> onnx.ModelProto:
    """out = Flatten(input): the layer's flattened features are the pixels themselves (spec scale 1, mean 0)."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["out"], axis=1)], "flatten",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3 * SIZE * SIZE])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def blob_images(n: int = 3) -> np.ndarray:
    """Black background with a random 4×4 blob in the centre (rows/cols 6..9)."""
    rng = np.random.default_rng(5)
    images = np.zeros((n, SIZE, SIZE, 3), np.float32)
    images[:, 6:10, 6:10] = rng.uniform(0, 255, (n, 4, 4, 3))
    return images


def test_translation_leaves_a_globally_pooled_equivariant_layer_unchanged() -> None:
    # ±4 px (0.25 × 16) keeps the blob in rows 2..13, a kernel radius away from the border; the exposed
    # rows repeat the flat edge (border nearest). gap: distance 0 (float rounding); conv map: moved, > 0.
    options = InvarianceOptions(layers=("conv", "gap"), transforms=("translation",),
                                translations=(-0.25, -0.125, 0.0, 0.125, 0.25))
    points: list[GamePoint] = []
    result = invariance(prepared(conv_gap_net(), SPEC), images=blob_images(), options=options, on_point=points.append)
    curve = result.curves["translation"]
    assert curve["magnitude"] == [-0.25, -0.125, 0.0, 0.125, 0.25]
    np.testing.assert_allclose(curve["gap"], 0.0, atol=1e-6)
    assert curve["conv"][2] == pytest.approx(0.0, abs=1e-12)  # the identity magnitude: the same features
    assert min(curve["conv"][:2] + curve["conv"][3:]) > 0.05
    assert [p.x for p in points] == curve["magnitude"] and points[0].values["conv"] == curve["conv"][0]
    assert result.forward_passes == 3 * (1 + 5)
    assert result.summary["translation"]["gap"] == pytest.approx(0.0, abs=1e-6)


def test_rotation_and_scale_change_the_pooled_features_of_a_random_kernel() -> None:
    options = InvarianceOptions(layers=("gap",), transforms=("rotation", "scale"), rotations_deg=(0.0, 45.0, 90.0),
                                scales=(1.0, 1.5))
    result = invariance(prepared(conv_gap_net(), SPEC), images=blob_images(2), options=options)
    assert result.curves["rotation"]["gap"][0] == pytest.approx(0.0, abs=1e-12)
    assert result.curves["scale"]["gap"][0] == pytest.approx(0.0, abs=1e-12)
    assert min(result.curves["rotation"]["gap"][1:]) > 1e-4 and result.curves["scale"]["gap"][1] > 1e-4
    assert set(result.curves) == {"rotation", "scale"} and len(result.curves["rotation"]["gap:std"]) == 3


def test_images_grouped_per_runtime_call_give_the_same_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    options = InvarianceOptions(layers=("relu", "gap"), transforms=("rotation",), rotations_deg=(0.0, 20.0, 45.0))
    together = invariance(prepared(conv_gap_net(), SPEC), images=blob_images(5), options=options)
    monkeypatch.setattr(lf, "ACTIVATION_BYTES", 1)  # one image per runtime call, one face per group
    calls: list[int] = []
    apart = invariance(prepared(conv_gap_net(), SPEC), images=blob_images(5), options=options,
                       progress=lambda done, total, phase: calls.append(done))
    assert calls[-1] == 5 * 4 and len(calls) == 5 * 4
    for name in ("relu", "gap"):
        np.testing.assert_allclose(apart.curves["rotation"][name], together.curves["rotation"][name], atol=1e-9)


def dot(row: int, col: int) -> np.ndarray:
    image = np.zeros((17, 17, 3), np.float32)
    image[row, col] = 200.0
    return image


def test_transform_geometry() -> None:
    options = InvarianceOptions()
    # 17 px, centre (8, 8). Translation +4/17 of the height moves 4 px down; horizontal moves right.
    assert np.argwhere(transformed(dot(8, 8), "translation", 4 / 17, options)[..., 0] > 100).tolist() == [[12, 8]]
    horizontal = InvarianceOptions(translation_axis="horizontal")
    assert np.argwhere(transformed(dot(8, 8), "translation", 4 / 17, horizontal)[..., 0] > 100).tolist() == [[8, 12]]
    # Rotation 90° counter-clockwise on screen: a dot right of the centre goes above it.
    assert np.argwhere(transformed(dot(8, 12), "rotation", 90.0, options)[..., 0] > 100).tolist() == [[4, 8]]
    # Scale 2 about the centre: 2 px right of centre lands 4 px right (spread over its neighbours by bilinear).
    zoomed = transformed(dot(8, 10), "scale", 2.0, options)[..., 0]
    assert np.unravel_index(np.argmax(zoomed), zoomed.shape) == (8, 12)
    # Identity magnitudes are exact copies; the border fills what comes in from outside.
    image = np.random.default_rng(0).uniform(0, 255, (17, 17, 3)).astype(np.float32)
    for transform, identity in [("translation", 0.0), ("rotation", 0.0), ("scale", 1.0)]:
        np.testing.assert_array_equal(transformed(image, transform, identity, options), image)
    constant = InvarianceOptions(border="constant", border_value=9.0)
    assert (transformed(image, "translation", 2 / 17, constant)[:2] == 9.0).all()
    wrap = InvarianceOptions(border="wrap")
    np.testing.assert_allclose(transformed(image, "translation", 2 / 17, wrap), np.roll(image, 2, axis=0), atol=1e-4)


@pytest.mark.parametrize(("options", "field"), [
    ({"transforms": ("shear",)}, "transforms"), ({"transforms": ()}, "transforms"),
    ({"transforms": ("scale", "scale")}, "transforms"), ({"translations": (2.0,)}, "translations"),
    ({"translations": ()}, "translations"), ({"rotations_deg": (float("nan"),)}, "rotations_deg"),
    ({"scales": (0.0,)}, "scales"), ({"scales": [1.0]}, "scales"), ({"translation_axis": "diagonal"}, "translation_axis"),
    ({"border": "zero"}, "border"), ({"border_value": 300.0}, "border_value"), ({"pooling": "sum"}, "pooling"),
    ({"layers": ("x", "x")}, "layers"),
])
def test_options_are_validated_naming_the_option(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        InvarianceOptions(**options)  # type: ignore[arg-type]
    assert err.value.field == field


def test_bad_images_name_the_field() -> None:
    model = prepared(conv_gap_net(), SPEC)
    with pytest.raises(InvalidRequest) as err:
        invariance(model, images=np.zeros((2, 8, 8, 3), np.float32))
    assert err.value.field == "images[0]"
    with pytest.raises(InvalidRequest) as err:
        invariance(model, images=[])
    assert err.value.field == "images"


def test_demo_identity_model_curves_with_default_options() -> None:
    """End to end on the bundled identity classifier: two frontal rendered faces, every default transform."""
    loaded = load_model(DEMO_MODELS / "identity.onnx")
    model = prepare(loaded, resolve_spec(loaded), RuntimeOptions(threads=2))
    rng = np.random.default_rng([20261125, 2])
    images = np.stack([render(FaceParams(sample_identity(rng)), 64, seed=k).image for k in range(2)]).astype(np.float32)
    options = InvarianceOptions()
    result = invariance(model, images=images, options=options)
    layers = result.options["layers"]
    assert len(layers) == 7 and layers[-1] == "logits"
    for transform, identity in [("translation", 0.0), ("rotation", 0.0), ("scale", 1.0)]:
        curve = result.curves[transform]
        at = curve["magnitude"].index(identity)
        for name in layers:
            assert len(curve[name]) == len(options.magnitudes(transform))
            assert curve[name][at] == pytest.approx(0.0, abs=1e-9)
            assert all(0.0 <= d <= 2.0 for d in curve[name]) and max(curve[name]) > 0.01
    assert result.forward_passes == 2 * (1 + 11 + 13 + 13)


@pytest.mark.parametrize(("name", "transform", "one"), [
    ("translations", "translation", 0.0), ("rotations_deg", "rotation", 0.0), ("scales", "scale", 1.0)])
def test_magnitudes_are_capped_naming_the_option(name: str, transform: str, one: float) -> None:
    at_cap = InvarianceOptions(**{name: (one,) * MAX_MAGNITUDES})  # type: ignore[arg-type]
    assert len(at_cap.magnitudes(transform)) == MAX_MAGNITUDES
    with pytest.raises(InvalidRequest) as err:
        InvarianceOptions(**{name: (one,) * (MAX_MAGNITUDES + 1)})  # type: ignore[arg-type]
    assert err.value.field == name and f"at most {MAX_MAGNITUDES:,}" in str(err.value)
    # As a request sends them (a list of loose values), refused before any forward pass.
    calls: list[int] = []
    with pytest.raises(InvalidRequest) as err:
        evaluate(prepared(conv_gap_net(), SPEC), "invariance", images=blob_images(1),
                 options={name: [one] * 100_000}, progress=lambda done, total, phase: calls.append(done))
    assert err.value.field == name and calls == []


def test_every_transformed_copy_counts_against_the_forward_pass_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    options = InvarianceOptions(layers=("gap",), transforms=("translation", "scale"), translations=(0.0, 0.1),
                                scales=(1.0, 1.2, 1.4))
    passes = 3 * (1 + 2 + 3)  # the originals, then every image at every magnitude
    model = prepared(conv_gap_net(), SPEC)
    monkeypatch.setattr(common, "MAX_FORWARD_PASSES", passes - 1)
    calls: list[int] = []
    with pytest.raises(LimitExceeded, match=f"{passes} forward passes"):
        invariance(model, images=blob_images(3), options=options, progress=lambda done, total, phase: calls.append(done))
    assert calls == []  # refused before the first forward pass
    monkeypatch.setattr(common, "MAX_FORWARD_PASSES", passes)
    assert invariance(model, images=blob_images(3), options=options).forward_passes == passes


def test_copies_run_in_bounded_chunks_and_match_distances_computed_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 4 copies over 3 images × 7 magnitudes cross image boundaries; the pixels are the features, so
    the distances are 1 − cos of the images themselves (numpy, float64), their mean and std over the images."""
    images = np.random.default_rng(8).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    options = InvarianceOptions(layers=("out",), transforms=("translation", "rotation"),
                                translations=(-0.25, -0.1, 0.0, 0.05, 0.1, 0.2, 0.25), rotations_deg=(0.0, 10.0, 90.0))
    monkeypatch.setattr(common, "CHUNK_BYTES", 4 * images[0].nbytes)
    sizes: list[int] = []
    run = lf.LayerFeatures.run

    def spy(self: lf.LayerFeatures, batch: np.ndarray, *args: object, **kwargs: object) -> list[np.ndarray]:
        sizes.append(len(batch))
        return run(self, batch, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lf.LayerFeatures, "run", spy)
    result = invariance(prepared(flatten_net(), SPEC), images=images, options=options)
    assert sizes[0] == 3 and max(sizes[1:]) == 4 and sum(sizes) == result.forward_passes == 3 * (1 + 7 + 3)
    for transform in options.transforms:
        magnitudes = options.magnitudes(transform)
        by_hand = np.empty((3, len(magnitudes)))
        for i, image in enumerate(images):
            a = image.astype(np.float64).ravel()
            for j, m in enumerate(magnitudes):
                b = transformed(image, transform, m, options).astype(np.float64).ravel()
                by_hand[i, j] = 1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        curve = result.curves[transform]
        np.testing.assert_allclose(curve["out"], by_hand.mean(axis=0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(curve["out:std"], by_hand.std(axis=0), rtol=1e-5, atol=1e-9)
        assert by_hand.std(axis=0).max() > 1e-3  # the images differ: the std is a real check
