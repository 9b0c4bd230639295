"""The hiding game against hand-computed curves, planted ground truth and direct onnxruntime runs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, options_from
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.hiding_game import HidingGameOptions, hiding_game
from faceaudit.testing import zoo

from tests.conftest import prepared

# The tiny linear classifier: a 2×2 image, logit_0 = Σ_p W_p·R_p/255 + b_0 over the red channel,
# logit_1 = b_1. On a white image each pixel p adds W_p to logit_0.
WEIGHTS = np.array([[0.1, 0.2], [0.3, 0.4]])
WHITE = np.full((2, 2, 3), 255.0, np.float32)
BLACK = np.zeros((2, 2, 3), np.float32)
BOX = (8, 16, 20, 28)  # the zoo's planted region (top, bottom, left, right)


def tiny_linear(bias: tuple[float, float] = (0.0, 0.5), weights: np.ndarray = WEIGHTS) -> onnx.ModelProto:
    """Flatten + Gemm: logits [N, 2] of an NCHW [N, 3, H, W] input, (H, W) the weights' shape; only
    the red channel counts."""
    w = np.zeros((2, 3 * weights.size), np.float32)
    w[0, : weights.size] = weights.ravel()  # NCHW flattening: the first H·W features are the red channel
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], transB=1)],
        "tiny_linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, *weights.shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.asarray(bias, np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run_onnx(proto: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """The model's output for RGB [0, 255] images under the default spec (x = img/255, NCHW), run directly."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        x = (np.asarray(images, np.float64) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)
        return session.run(None, {"input": x})[0].astype(np.float64)

    return run


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def box_map(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """The oracle map of the planted models: 1 inside the box, 0 outside, plus a little noise."""
    values = rng.random((size, size)) * 0.1
    top, bottom, left, right = BOX
    values[top:bottom, left:right] += 1.0
    return values


def gaussian_nearest(plane: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur written out by hand: taps to ⌊4σ + ½⌋ px (scipy's truncate=4), normalised,
    edges repeated (np.pad "edge"), one axis after the other."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    out = np.asarray(plane, np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        size = out.shape[axis]
        out = sum(t * np.take(padded, np.arange(j, j + size), axis=axis) for j, t in enumerate(taps))
    return out


def curves_from(points: list[GamePoint]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for point in points:
        for name, value in point.values.items():
            out.setdefault(point.series, {}).setdefault(name, []).append(value)
    return out


@pytest.fixture(scope="module")
def linear() -> PreparedModel:
    return prepared(tiny_linear(), {"kind": "classifier"})


def tiny_items(*images: np.ndarray) -> list[GameItem]:
    return [GameItem(image, ExplainTarget(class_index=0), {"oracle": WEIGHTS, "inverse": -WEIGHTS}) for image in images]


HAND = HidingGameOptions(steps=4, max_fraction=0.75, fill="zero")  # hide 0, 1, 2, 3 of the 4 pixels


def test_zero_fill_curves_match_the_hand_computed_ones(linear: PreparedModel) -> None:
    result = hiding_game(linear, items=tiny_items(WHITE), options=HAND)
    assert result.x == [0.0, 0.25, 0.5, 0.75]
    # oracle hides 0.1, 0.2, 0.3 in turn: logit_0 = 1.0, 0.9, 0.7, 0.4 against logit_1 = 0.5
    assert result.curves["oracle"]["accuracy"] == [1, 1, 1, 0]
    np.testing.assert_allclose(result.curves["oracle"]["mean_score"], [1.0, 0.9, 0.7, 0.4], atol=1e-6)
    # inverse hides 0.4, 0.3, 0.2 first: 1.0, 0.6, 0.3, 0.1
    assert result.curves["inverse"]["accuracy"] == [1, 1, 0, 0]
    np.testing.assert_allclose(result.curves["inverse"]["mean_score"], [1.0, 0.6, 0.3, 0.1], atol=1e-6)
    # areas over [0, 0.75], divided by 0.75
    assert result.summary["oracle"]["auc_accuracy"] == pytest.approx(0.625 / 0.75)
    assert result.summary["oracle"]["auc_mean_score"] == pytest.approx(0.575 / 0.75, abs=1e-6)
    assert result.summary["inverse"]["auc_accuracy"] == pytest.approx(0.375 / 0.75)
    assert result.summary["inverse"]["auc_mean_score"] == pytest.approx(0.3625 / 0.75, abs=1e-6)
    assert set(result.curves) == {"inverse", "oracle", "random"}


def test_dataset_mean_fill_defaults_to_the_images_mean_colour(linear: PreparedModel) -> None:
    options = HidingGameOptions(steps=4, max_fraction=0.75, fill="dataset_mean")
    result = hiding_game(linear, items=tiny_items(WHITE, BLACK), options=options)
    assert result.options["dataset_mean"] == [127.5] * 3
    # a hidden pixel contributes W_p/2. White: 1, 0.95, 0.85, 0.7 (always class 0); black: 0, 0.05,
    # 0.15, 0.3 (never class 0)
    np.testing.assert_allclose(result.curves["oracle"]["mean_score"], [0.5, 0.5, 0.5, 0.5], atol=1e-6)
    assert result.curves["oracle"]["accuracy"] == [0.5] * 4
    black = hiding_game(linear, items=tiny_items(BLACK), options=HidingGameOptions(
        steps=4, max_fraction=0.75, fill="dataset_mean", dataset_mean=(127.5,)))
    np.testing.assert_allclose(black.curves["oracle"]["mean_score"], [0.0, 0.05, 0.15, 0.3], atol=1e-6)
    np.testing.assert_allclose(black.curves["inverse"]["mean_score"], [0.0, 0.2, 0.35, 0.45], atol=1e-6)
    grey = hiding_game(linear, items=tiny_items(WHITE), options=HidingGameOptions(
        steps=4, max_fraction=0.75, fill="dataset_mean", dataset_mean=(0.0, 127.5, 255.0)))  # only red counts: 0
    np.testing.assert_allclose(grey.curves["oracle"]["mean_score"], [1.0, 0.9, 0.7, 0.4], atol=1e-6)


def test_soft_mask_with_a_tiny_sigma_is_the_hard_mask_and_the_default_sigma_is_two_percent(linear: PreparedModel) -> None:
    items = tiny_items(WHITE, BLACK)
    hard = hiding_game(linear, items=items, options=HidingGameOptions(steps=4, max_fraction=0.75, fill="dataset_mean"))
    soft = hiding_game(linear, items=items, options=HidingGameOptions(steps=4, max_fraction=0.75, mask_sigma=1e-3))
    assert soft.options["fill"] == "soft_dataset_mean"  # the classifier default
    np.testing.assert_allclose(soft.curves["oracle"]["mean_score"], hard.curves["oracle"]["mean_score"], atol=1e-6)
    default = hiding_game(linear, items=items, options=HidingGameOptions(steps=4, max_fraction=0.75))
    assert default.options["mask_sigma"] == pytest.approx(0.04)  # 2 % of the 2 px width


def test_soft_mask_curve_matches_a_reference_written_out_by_hand() -> None:
    # An 8×8 linear classifier, soft_dataset_mean with σ = 0.8: the hard mask of the ⌊f·P + ½⌋
    # lowest map values (no ties: continuous random maps), blurred by a hand-written Gaussian,
    # blends each red pixel towards the images' mean red; score = Σ W·red/255.
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(8, 8))
    model = prepared(tiny_linear(bias=(0.0, 0.0), weights=weights), {"kind": "classifier"})
    images = rng.uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    maps = [rng.random((8, 8)) for _ in images]
    items = [GameItem(image, ExplainTarget(class_index=0), {"m": m}) for image, m in zip(images, maps)]
    sigma, steps = 0.8, 11
    result = hiding_game(model, items=items, options=HidingGameOptions(steps=steps, max_fraction=0.99, mask_sigma=sigma))
    mean_red = images[..., 0].astype(np.float64).mean()
    expected = []
    for fraction in np.linspace(0, 0.99, steps):
        hidden = int(np.floor(fraction * 64 + 0.5))
        scores = []
        for image, values in zip(images, maps):
            hard = np.zeros(64)
            hard[np.argsort(values.ravel())[:hidden]] = 1.0
            soft = gaussian_nearest(hard.reshape(8, 8), sigma)
            scores.append(np.sum(weights * (image[..., 0] * (1 - soft) + mean_red * soft)) / 255)
        expected.append(np.mean(scores))
    np.testing.assert_allclose(result.curves["m"]["mean_score"], expected, atol=5e-6)


def test_a_max_fraction_that_hides_no_pixel_is_refused_before_any_forward_pass(linear: PreparedModel) -> None:
    passes: list[int] = []
    with pytest.raises(InvalidRequest) as caught:  # 0.1 of 4 pixels rounds to 0
        hiding_game(linear, items=tiny_items(WHITE), options=HidingGameOptions(steps=3, max_fraction=0.1),
                    progress=lambda done, total, phase: passes.append(done))
    assert caught.value.field == "max_fraction" and passes == []
    # 1/8 of 4 pixels is half a pixel: it rounds up to one, a curve over x in [0, 0.25]
    result = hiding_game(linear, items=tiny_items(WHITE), options=HidingGameOptions(steps=2, max_fraction=0.125, fill="zero"))
    assert result.x == [0.0, 0.25]


def test_softmax_spec_scores_the_true_class_probability() -> None:
    model = prepared(tiny_linear(), {"kind": "classifier", "softmax": True})
    result = hiding_game(model, items=tiny_items(WHITE), options=HAND)
    logits = np.array([1.0, 0.9, 0.7, 0.4])
    np.testing.assert_allclose(result.curves["oracle"]["mean_score"], 1 / (1 + np.exp(0.5 - logits)), atol=1e-6)
    assert result.curves["oracle"]["accuracy"] == [1, 1, 1, 0]


def test_points_stream_as_computed_and_equal_the_curves(linear: PreparedModel) -> None:
    points: list[GamePoint] = []
    progress: list[tuple[int, int]] = []
    seen_at: list[int] = []  # forward passes done when each point arrived

    def on_point(point: GamePoint) -> None:
        points.append(point)
        seen_at.append(progress[-1][0])

    result = hiding_game(linear, items=tiny_items(WHITE, BLACK), options=HAND, on_point=on_point,
                         progress=lambda done, total, phase: progress.append((done, total)))
    assert curves_from(points) == result.curves
    for name in result.curves:
        ours = [p for p in points if p.series == name]
        assert [p.index for p in ours] == [0, 1, 2, 3] and [p.x for p in ours] == result.x
        assert all(p.game == "hiding_game" for p in ours)
    assert seen_at[0] < progress[-1][0]  # the first point came before the last forward pass
    # 2 images: fraction 0 (the clean images) once, then 3 fractions × 3 series (inverse, oracle, random)
    assert result.forward_passes == 2 * (1 + 3 * 3) == progress[-1][0] == progress[-1][1]


def test_the_random_series_is_seeded(linear: PreparedModel) -> None:
    image = np.random.default_rng(3).uniform(0, 255, (2, 2, 3)).astype(np.float32)
    items = tiny_items(*[image] * 8)
    runs = [hiding_game(linear, items=items, options=HidingGameOptions(steps=4, max_fraction=0.75, fill="zero", seed=s))
            for s in (1, 1, 2)]
    assert runs[0].curves["random"] == runs[1].curves["random"]
    assert runs[0].curves["random"] != runs[2].curves["random"]


def test_oracle_beats_random_on_the_planted_classifier(rng: np.random.Generator) -> None:
    proto = zoo.planted_region_classifier()
    model, run = prepared(proto, {"kind": "classifier"}), run_onnx(proto)
    images = rng.uniform(0, 255, (12, 32, 32, 3)).astype(np.float32)
    classes = np.argmax(run(images), axis=1)  # the true label: what the clean image is classified as
    items = [GameItem(image, ExplainTarget(class_index=int(k)), {"oracle": box_map(rng)}) for image, k in zip(images, classes)]
    result = hiding_game(model, items=items, options=HidingGameOptions(steps=20))  # the paper's soft mean fill
    assert result.curves["oracle"]["accuracy"][0] == result.curves["random"]["accuracy"][0] == 1.0
    assert result.summary["oracle"]["auc_accuracy"] > result.summary["random"]["auc_accuracy"]
    hard = hiding_game(model, items=items, options=HidingGameOptions(steps=20, fill="dataset_mean"))
    # the oracle hides the 960 pixels outside the box first: nothing the model sees changes up to
    # 960/1024 = 94 % (fractions 0 .. 0.9379 are the first 19 of 20)
    assert hard.curves["oracle"]["accuracy"][:19] == [1.0] * 19
    np.testing.assert_allclose(hard.curves["oracle"]["mean_score"][:19], hard.curves["oracle"]["mean_score"][0], atol=1e-6)
    assert hard.summary["oracle"]["auc_accuracy"] > hard.summary["random"]["auc_accuracy"]
    zero = hiding_game(model, items=items, options=HidingGameOptions(steps=20, fill="zero"))
    # black can only lower every score (non-negative weights): the oracle's stays the clean score longest
    assert zero.summary["oracle"]["auc_mean_score"] > zero.summary["random"]["auc_mean_score"]
    assert zero.summary["oracle"]["auc_accuracy"] >= zero.summary["random"]["auc_accuracy"]


@pytest.fixture(scope="module")
def triplets() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]:
    """Probes, mates (the probe changed outside the box, a little noise inside) and non-mates; the
    third probe's mate is another face, so the clean TPR is below 1."""
    rng = np.random.default_rng(7)
    probes = rng.uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    mates = np.clip(probes + rng.normal(0, 10, probes.shape), 0, 255).astype(np.float32)
    top, bottom, left, right = BOX
    outside = np.ones((32, 32), bool)
    outside[top:bottom, left:right] = False
    mates[:, outside] = rng.uniform(0, 255, (6, int(outside.sum()), 3))
    mates[2] = rng.uniform(0, 255, (32, 32, 3))
    non_mates = rng.uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    return zoo.planted_region_embedding(), probes, mates, non_mates


def embedding_items(triplets, rng: np.random.Generator) -> list[GameItem]:  # type: ignore[no-untyped-def]
    _, probes, mates, non_mates = triplets
    return [GameItem(p, ExplainTarget(mate=m, non_mate=n), {"oracle": box_map(rng)}) for p, m, n in zip(probes, mates, non_mates)]


def test_embedding_non_mate_fill_starts_at_the_clean_tpr_and_ends_at_the_non_mate(triplets, rng) -> None:  # type: ignore[no-untyped-def]
    proto, probes, mates, non_mates = triplets
    run = run_onnx(proto)
    to_mate, to_non_mate = cosines(run(probes), run(mates)), cosines(run(probes), run(non_mates))
    clean_tpr = np.mean(to_mate > to_non_mate)
    assert 0 < clean_tpr < 1
    result = hiding_game(prepared(proto, {"kind": "embedding"}), items=embedding_items(triplets, rng),
                         options=HidingGameOptions(steps=5, max_fraction=1.0))
    assert result.options["fill"] == "non_mate" and result.x == [0.0, 0.25, 0.5, 0.75, 1.0]
    # all hidden: the probe is its non-mate, cos(probe, non-mate) = 1 > cos(probe, mate)
    end_score = np.mean(cosines(run(non_mates), run(mates)) - 1)
    for name in ("oracle", "random"):
        curve = result.curves[name]
        assert curve["tpr"][0] == pytest.approx(clean_tpr) and curve["tpr"][-1] == 0.0
        assert curve["mean_score"][0] == pytest.approx(np.mean(to_mate - to_non_mate), abs=1e-5)
        assert curve["mean_score"][-1] == pytest.approx(end_score, abs=1e-5)
    # 6 probes: 12 references, the clean and the all-hidden steps once, 3 steps × 2 series
    assert result.forward_passes == 12 + 6 * 2 + 6 * 3 * 2


def test_embedding_tau_counts_matches_above_the_threshold(triplets, rng) -> None:  # type: ignore[no-untyped-def]
    proto, probes, mates, _ = triplets
    run = run_onnx(proto)
    to_mate = cosines(run(probes), run(mates))
    tau = float(np.sort(to_mate)[2:4].mean())  # three of the six above
    items = [GameItem(p, ExplainTarget(mate=m), {"oracle": box_map(rng)}) for p, m in zip(probes, mates)]
    result = hiding_game(prepared(proto, {"kind": "embedding"}), items=items, options=HidingGameOptions(steps=3, fill="zero", tau=tau))
    assert result.curves["oracle"]["tpr"][0] == pytest.approx(np.mean(to_mate >= tau)) == pytest.approx(0.5)
    assert result.curves["oracle"]["mean_score"][0] == pytest.approx(np.mean(to_mate), abs=1e-5)
    assert "auc_tpr" in result.summary["oracle"] and result.forward_passes == 6 + 6 + 6 * 2 * 2


def test_oracle_beats_random_on_the_planted_embedding(triplets, rng) -> None:  # type: ignore[no-untyped-def]
    proto = triplets[0]
    result = hiding_game(prepared(proto, {"kind": "embedding"}), items=embedding_items(triplets, rng), options=HidingGameOptions(steps=20))
    assert result.summary["oracle"]["auc_tpr"] > result.summary["random"]["auc_tpr"]
    assert result.summary["oracle"]["auc_mean_score"] > result.summary["random"]["auc_mean_score"]


@pytest.mark.parametrize(("values", "field"), [
    ({"steps": 1}, "steps"), ({"steps": 2.5}, "steps"), ({"max_fraction": 0.0}, "max_fraction"),
    ({"max_fraction": 1.5}, "max_fraction"), ({"max_fraction": float("nan")}, "max_fraction"),
    ({"fill": "blur"}, "fill"), ({"dataset_mean": (1.0, 2.0)}, "dataset_mean"),
    ({"dataset_mean": (300.0,)}, "dataset_mean"), ({"fill": "zero", "dataset_mean": (1.0,)}, "dataset_mean"),
    ({"mask_sigma": 0.0}, "mask_sigma"), ({"fill": "dataset_mean", "mask_sigma": 2.0}, "mask_sigma"),
    ({"tau": 1.5}, "tau"), ({"tau": True}, "tau"), ({"seed": -1}, "seed"), ({"chunk": 0}, "chunk"),
])
def test_bad_options_name_the_option(values: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        HidingGameOptions(**values)
    assert caught.value.field == field


def test_options_from_text_as_the_cli_gives_them() -> None:
    options = options_from(HidingGameOptions, {"steps": "10", "fill": "soft_dataset_mean", "dataset_mean": "1,2,3",
                                                "mask_sigma": "1.5", "tau": "0.3", "max_fraction": "0.9"})
    assert options == HidingGameOptions(steps=10, fill="soft_dataset_mean", dataset_mean=(1.0, 2.0, 3.0),
                                        mask_sigma=1.5, tau=0.3, max_fraction=0.9)


def test_requests_that_do_not_fit_the_model_name_the_field(linear: PreparedModel, triplets, rng) -> None:  # type: ignore[no-untyped-def]
    items = tiny_items(WHITE)
    with pytest.raises(InvalidRequest, match="fill"):
        hiding_game(linear, items=items, options=HidingGameOptions(fill="non_mate"))
    with pytest.raises(InvalidRequest, match="tau"):
        hiding_game(linear, items=items, options=HidingGameOptions(tau=0.5))
    with pytest.raises(InvalidRequest) as caught:
        hiding_game(linear, items=[GameItem(WHITE, ExplainTarget(class_index=2), {"oracle": WEIGHTS})])
    assert caught.value.field == "items[0].target"
    with pytest.raises(InvalidRequest) as caught:
        hiding_game(linear, items=[GameItem(WHITE, ExplainTarget(class_index=0), {"random": WEIGHTS})])
    assert caught.value.field == "items"
    proto, probes, mates, non_mates = triplets
    embedding = prepared(proto, {"kind": "embedding"})
    no_non_mate = [GameItem(probes[0], ExplainTarget(mate=mates[0]), {"oracle": box_map(rng)})]
    with pytest.raises(InvalidRequest) as caught:
        hiding_game(embedding, items=no_non_mate)  # the default non-mate fill needs one
    assert caught.value.field == "items[0].target"
    with pytest.raises(InvalidRequest) as caught:
        hiding_game(embedding, items=no_non_mate, options=HidingGameOptions(dataset_mean=(1.0,)))
    assert caught.value.field == "dataset_mean"
    with pytest.raises(InvalidRequest) as caught:  # the embedding default fill is non_mate, not soft
        hiding_game(embedding, items=embedding_items(triplets, rng), options=HidingGameOptions(mask_sigma=2.0))
    assert caught.value.field == "mask_sigma"
    mixed = embedding_items(triplets, rng)[:2] + no_non_mate
    with pytest.raises(InvalidRequest) as caught:
        hiding_game(embedding, items=mixed, options=HidingGameOptions(fill="zero", tau=0.5))
    assert caught.value.field == "items[2].target"


def test_results_do_not_depend_on_the_chunk_size(triplets, rng) -> None:  # type: ignore[no-untyped-def]
    proto, probes, mates, non_mates = triplets
    items = embedding_items(triplets, rng)  # 6 probes: chunks of 4 split every step in two
    model = prepared(proto, {"kind": "embedding"})
    one = hiding_game(model, items=items, options=HidingGameOptions(steps=6, chunk=64))
    split = hiding_game(model, items=items, options=HidingGameOptions(steps=6, chunk=4))
    assert split.forward_passes == one.forward_passes == 12 + 6 + 6 * 5 * 2
    for name in one.curves:
        assert split.curves[name]["tpr"] == one.curves[name]["tpr"]
        np.testing.assert_allclose(split.curves[name]["mean_score"], one.curves[name]["mean_score"], atol=1e-6)
