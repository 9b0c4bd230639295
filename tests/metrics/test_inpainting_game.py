"""Inpainting game: SR and FAR counted by hand on a 4×4 two-number embedding, eqs. 7–8 on quadruplets
placed at chosen angles, FAR 0 for the region's own mask, streaming, options; oracle vs random on the
demo embedding model with demo quadruplets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceaudit.demo import quadruplet, sample_identity, sample_nuisance
from faceaudit.engine.prepare import prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import options_from
from faceaudit.metrics.common import GamePoint
from faceaudit.metrics.inpainting_game import (
    MAX_FARS, InpaintingGameOptions, InpaintingItem, _plan, _Quadruplet, inpainting_game, sr_at_far,
)
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo

from tests.conftest import prepared

# The model: embedding = (x at pixel A, mean of x over the region B), x = channel 0 / 255.
A = (0, 0)
REGION = np.zeros((4, 4), bool)
REGION[1:3, 1:3] = True  # 4 pixels inside, 12 outside
TAU = 0.9


def two_number_embedding() -> onnx.ModelProto:
    weights = np.zeros((2, 3, 4, 4), np.float32)  # NCHW flatten order
    weights[0, 0][A] = 1.0
    weights[1, 0][REGION] = 0.25
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["embedding"], transB=1)],
        "two_numbers", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights.reshape(2, -1), "W"),
                     numpy_helper.from_array(np.zeros(2, np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def tiny():
    return prepared(two_number_embedding(), {"kind": "embedding"})


def face(a: float, b: float) -> np.ndarray:
    """A grey 4×4 face with pixel A at a and the region at b (× 255); the rest at 255."""
    image = np.full((4, 4, 3), 255.0, np.float32)
    image[A] = 255 * a
    image[REGION] = 255 * b
    return image


def at_angle(degrees: float) -> np.ndarray:
    """A face whose embedding points at `degrees` from the first axis."""
    return face(math.cos(math.radians(degrees)), math.sin(math.radians(degrees)))


# OP embeds to (1, 0), IP = OP with the region at 255 to (1, 1); OM = OP, IN = IP. A blend with a
# share f of the region taken from IP embeds to (1, f): cos to IN = (1 + f) / (√2 · √(1 + f²)) is
# 0.857 for f = 1/4, 0.949 for f = 1/2: with τ = 0.9 a blend succeeds iff ≥ 2 region pixels are in the mask.
OP, IP = face(1, 0), face(1, 1)


def hand_item(values: dict[tuple[int, int], float], name: str) -> InpaintingItem:
    saliency = np.zeros((4, 4))
    for pixel, value in values.items():
        saliency[pixel] = value
    return InpaintingItem(OP, OP, IP, IP, REGION, {"m": saliency}, name)


# Item 1: A = 8 (outside), the 4 region pixels 4 each: mass 24. Mass before each pixel in order: 0, 8, 12, 16, 20.
# Item 2: region 6, 5, 1, 1, outside (3, 3) = 4, (0, 3) = −2 (no mass): mass 17; before: 0, 6, 11, 15, 16.
HAND = [
    hand_item({A: 8, (1, 1): 4, (1, 2): 4, (2, 1): 4, (2, 2): 4}, "one"),
    hand_item({(1, 1): 6, (1, 2): 5, (2, 1): 1, (2, 2): 1, (3, 3): 4, (0, 3): -2}, "two"),
]
# K = 4: pixel in the mask at step k iff 4 · before < k · mass.
#   item 1: masks of 0, 1, 2, 4, 5 pixels; region pixels 0, 0, 1, 3, 4; outside 0, 1, 1, 1, 1; success at k = 3, 4
#   item 2: masks of 0, 1, 2, 3, 5 pixels; region pixels 0, 1, 2, 2, 4; outside 0, 0, 0, 1, 1; success at k = 2, 3, 4
HAND_SR = [0, 0, 0.5, 1, 1]
HAND_FAR = [0, 1 / 24, 1 / 24, 2 / 24, 2 / 24]  # pooled over 2 × 12 outside pixels
HAND_FRACTION = [0, 2 / 32, 4 / 32, 7 / 32, 10 / 32]


@pytest.mark.parametrize("chunk", [1, 2, 64])
def test_sr_and_far_match_the_hand_count(tiny, chunk: int) -> None:
    points: list[GamePoint] = []
    result = inpainting_game(tiny, items=HAND, options=InpaintingGameOptions(tau=TAU, steps=4, fars=(0.01, 0.05, 0.1),
                                                                             chunk=chunk), on_point=points.append)
    curve = result.curves["m"]
    np.testing.assert_allclose(curve["sr"], HAND_SR)
    np.testing.assert_allclose(curve["far"], HAND_FAR)
    np.testing.assert_allclose(curve["mask_fraction"], HAND_FRACTION)
    assert result.x == [0, 0.25, 0.5, 0.75, 1]
    # FAR ≤ 1 %: only step 0; ≤ 5 %: steps 0–2 (1/24 = 4.2 %), best SR 0.5; ≤ 10 %: all.
    assert result.summary["m"] == {"sr_at_far_0.01": 0.0, "sr_at_far_0.05": 0.5, "sr_at_far_0.1": 1.0}
    assert result.summary["quadruplets"]["kept"] == 2
    # the oracle: one more region pixel per step, no pixel outside; SR from 2 of 4 pixels on
    np.testing.assert_allclose(result.curves["oracle"]["sr"], [0, 0, 1, 1, 1])
    assert result.curves["oracle"]["far"] == [0.0] * 5
    # every (series, step) streamed once, step after step, with the curve's numbers
    assert len(points) == 3 * 5
    for series in ("m", "random", "oracle"):
        mine = [p for p in points if p.series == series]
        assert [p.index for p in mine] == list(range(5))
        assert [p.values["sr"] for p in mine] == result.curves[series]["sr"]
        assert [p.values["far"] for p in mine] == result.curves[series]["far"]
    # forward passes: 4 per quadruplet, then only masks that changed (item 1: 4, item 2: 4, oracle 4 + 4)
    assert 8 + 16 + 2 <= result.forward_passes <= 8 + 16 + 8


def test_progress_counts_both_phases_and_the_result_is_json(tiny) -> None:
    calls: list[tuple[int, int, str]] = []
    result = inpainting_game(tiny, items=HAND, options=InpaintingGameOptions(tau=TAU, steps=4, chunk=3),
                             progress=lambda done, total, phase: calls.append((done, total, phase)))
    filtered = [c for c in calls if c[2] == "inpainting_game: eqs. 7–8"]
    played = [c for c in calls if c[2] == "inpainting_game"]
    assert len(filtered) + len(played) == len(calls) and filtered[-1][:2] == (8, 8)
    assert played[-1][0] == played[-1][1] == result.forward_passes - 8
    assert json.loads(json.dumps(result.to_dict()))["summary"]["m"]["sr_at_far_0.05"] == 0.5


def test_unchanged_masks_are_not_scored_again(tiny) -> None:
    # K = 8, item 1 masks of 1, 1, 2, 2, 3, 4, 5, 5 pixels (5 changes; 2 region pixels from k = 5),
    # item 2: 1, 1, 2, 2, 2, 3, 3, 5 (4 changes; 2 region pixels from k = 3); oracle: 1, 1, 2, 2, 3, 3, 4, 4
    # (4 changes each); random: at most 8 each.
    result = inpainting_game(tiny, items=HAND, options=InpaintingGameOptions(tau=TAU, steps=8))
    assert 8 + 17 + 2 <= result.forward_passes <= 8 + 17 + 16
    np.testing.assert_allclose(result.curves["m"]["sr"], [0, 0, 0, 0.5, 0.5, 1, 1, 1, 1])


def test_far_is_zero_while_a_region_map_has_region_pixels_left(tiny) -> None:
    exact = REGION.astype(float)
    leaky = exact + 0.01 * ~REGION  # 4 inside, 0.12 outside: mass 4.12
    items = [InpaintingItem(OP, OP, IP, IP, REGION, {"exact": exact, "leaky": leaky})]
    result = inpainting_game(tiny, items=items, options=InpaintingGameOptions(tau=TAU))
    assert result.curves["exact"]["far"] == [0.0] * 101
    assert result.curves["exact"] == result.curves["oracle"]
    leaky_far = np.array(result.curves["leaky"]["far"])
    # the first outside pixel has mass 4 before it: in the mask iff 100 · 4 < k · 4.12, i.e. k ≥ 98
    assert (leaky_far[:98] == 0).all() and (leaky_far[98:] > 0).all()
    # the last region pixel (mass 3 before it) joins at 100 · 3 < k · 4.12, k ≥ 73
    fraction = np.array(result.curves["leaky"]["mask_fraction"])
    assert fraction[72] < 4 / 16 and fraction[73] == 4 / 16
    assert result.summary["exact"]["sr_at_far_0.01"] == 1.0
    assert not any("differs from the original" in note for note in result.notes)
    outside = IP.copy()
    outside[3, 3] = 0  # IP now differs from OP outside the region too
    result = inpainting_game(tiny, items=[InpaintingItem(OP, OP, outside, IP, REGION, name="leak")],
                             options=InpaintingGameOptions(tau=TAU, steps=2))
    assert any("differs from the original outside the region" in note and "leak" in note for note in result.notes)


def test_uint8_and_grey_faces_and_a_0_1_region_give_the_same_game(tiny) -> None:
    options = InpaintingGameOptions(tau=TAU, steps=4)
    grey = [InpaintingItem(*(getattr(item, name)[..., 0].astype(np.uint8) for name in
                             ("original_probe", "original_mate", "inpainted_probe", "inpainted_non_mate")),
                           REGION.astype(np.int64), {"m": item.maps["m"].astype(np.float32)}, item.name) for item in HAND]
    assert inpainting_game(tiny, items=grey, options=options).curves == inpainting_game(tiny, items=HAND, options=options).curves


@pytest.mark.parametrize("seed", range(4))
def test_the_last_step_takes_exactly_the_positive_pixels(seed: int) -> None:
    # float sums in another order (np.sum is pairwise) can exceed the running sum by an ulp: zero-mass
    # pixels must still stay out (half of these seeds would let them in with such a total).
    rng = np.random.default_rng(seed)
    values = rng.random((64, 64)) * (rng.random((64, 64)) < 0.5)
    region = np.zeros((64, 64), bool)
    region[:8] = True
    quad = _Quadruplet(seed, "", np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.float32), region, {})
    plan = _plan(values, quad, InpaintingGameOptions(tau=TAU))
    assert plan.counts[-1] == np.count_nonzero(values) and plan.counts[0] == 0
    assert (np.diff(plan.counts) >= 0).all()
    assert plan.false_positives[-1] == np.count_nonzero(values[8:])


def test_a_map_without_positive_values_never_changes_the_probe(tiny) -> None:
    items = [InpaintingItem(OP, OP, IP, IP, REGION, {"negative": -np.ones((4, 4))})]
    result = inpainting_game(tiny, items=items, options=InpaintingGameOptions(tau=TAU, steps=5))
    assert result.curves["negative"]["sr"] == [0.0] * 6 and result.curves["negative"]["mask_fraction"] == [0.0] * 6
    assert any("negative: 1 map(s) have no positive value" in note for note in result.notes)


def test_eqs_7_and_8_keep_only_quadruplets_that_change_identity_both_ways(tiny) -> None:
    # (OP, OM, IP, IN) as embedding angles in degrees; τ = 0.9 is cos 25.8°.
    cases = {
        "kept": (0, 0, 45, 45),
        "op_om_far": (0, 30, 60, 60),  # cos 30° < τ: OP does not match its mate
        "op_in_close": (0, 0, 40, 20),  # cos 20° ≥ τ: OP already matches the non-mate
        "ip_in_far": (0, 0, 50, 80),  # cos 30° < τ: the inpainted probe does not match the non-mate
        "ip_om_close": (0, 10, 30, 45),  # cos 20° ≥ τ: the inpainted probe still matches the mate
        "both_close": (0, 0, 20, 20),  # fails (7) and (8)
    }
    items = [InpaintingItem(*(at_angle(d) for d in angles), REGION, name=name) for name, angles in cases.items()]
    result = inpainting_game(tiny, items=items, options=InpaintingGameOptions(tau=TAU, steps=2))
    assert result.summary["quadruplets"] == {"given": 6, "kept": 1, "dropped": 5, "op_om_not_matched": 1,
                                             "op_in_matched": 2, "ip_in_not_matched": 1, "ip_om_matched": 2}
    assert "1 of 6 quadruplets meet eqs. 7–8" in result.notes[1]
    assert all(name in result.notes[2] for name in cases if name != "kept") and "kept" not in result.notes[2]
    with pytest.raises(InvalidRequest) as caught:
        inpainting_game(tiny, items=items[1:], options=InpaintingGameOptions(tau=TAU))
    assert caught.value.field == "items" and "none of the 5" in str(caught.value)


def test_tau_derived_from_a_false_positive_rate(tiny) -> None:
    options = InpaintingGameOptions(fpr=0.25, impostor_scores=(0.1, 0.5, 0.85, 0.95), genuine_scores=(0.8, 0.9, 1.0))
    result = inpainting_game(tiny, items=HAND, options=options)
    threshold = result.summary["threshold"]
    assert 0.85 < threshold["tau"] < 0.85 + 1e-12  # one false positive allowed: 0.95 passes, 0.85 does not
    assert threshold["achieved_fpr"] == 0.25 and threshold["tpr"] == 2 / 3
    assert result.options["impostor_scores"] == 4 and "derived from fpr=0.25" in result.notes[0]


@pytest.mark.parametrize(("values", "field"), [
    ({"tau": 1.5}, "tau"),
    ({"tau": "0.5"}, "tau"),
    ({"tau": 0.5, "fpr": 0.1, "impostor_scores": (0.1,) * 20}, "tau"),
    ({"tau": 0.5, "impostor_scores": (0.1,)}, "impostor_scores"),
    ({"impostor_scores": (0.1,)}, "fpr"),
    ({"fpr": 0.1}, "impostor_scores"),
    ({"fpr": 0.01, "impostor_scores": (0.1,) * 20}, "fpr"),
    ({"tau": 0.5, "steps": 0}, "steps"),
    ({"tau": 0.5, "steps": 2.5}, "steps"),
    ({"tau": 0.5, "fars": ()}, "fars"),
    ({"tau": 0.5, "fars": (0.0,)}, "fars"),
    ({"tau": 0.5, "fars": (float("nan"),)}, "fars"),
    ({"tau": 0.5, "oracle": "yes"}, "oracle"),
    ({"tau": 0.5, "seed": -1}, "seed"),
    ({"tau": 0.5, "chunk": 0}, "chunk"),
])
def test_options_are_validated_naming_the_option(values: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        InpaintingGameOptions(**values)
    assert caught.value.field == field


def test_options_from_loose_values_and_the_missing_threshold(tiny) -> None:
    options = options_from(InpaintingGameOptions, {"tau": "0.8", "fars": "0.01,0.1", "steps": "10"})
    assert options.tau == 0.8 and options.fars == (0.01, 0.1) and options.steps == 10
    with pytest.raises(InvalidRequest) as caught:
        inpainting_game(tiny, items=HAND)  # the default options carry no τ
    assert caught.value.field == "tau"


@pytest.mark.parametrize(("change", "field"), [
    (lambda item: "not an item", "items[1]"),
    (lambda item: _with(item, region=np.zeros((4, 4), bool)), "items[1].region"),
    (lambda item: _with(item, region=np.ones((4, 4), bool)), "items[1].region"),
    (lambda item: _with(item, region=np.full((4, 4), 2)), "items[1].region"),
    (lambda item: _with(item, region=REGION[:3]), "items[1].region"),
    (lambda item: _with(item, inpainted_probe=np.zeros((5, 4, 3))), "items[1].inpainted_probe"),
    (lambda item: _with(item, original_mate=np.full((4, 4, 3), 300.0)), "items[1].original_mate"),
    (lambda item: _with(item, maps={"other": np.zeros((4, 4))}), "items[1].maps"),
    (lambda item: _with(item, maps={"m": np.zeros((3, 4))}), "items[1].maps[m]"),
    (lambda item: _with(item, maps={"m": np.full((4, 4), np.nan)}), "items[1].maps[m]"),
    (lambda item: _with(item, maps={"m": np.full((4, 4), "a")}), "items[1].maps[m]"),
])
def test_bad_items_name_the_field(tiny, change, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        inpainting_game(tiny, items=[HAND[0], change(HAND[1])], options=InpaintingGameOptions(tau=TAU))
    assert caught.value.field == field


def test_a_bool_map_counts_as_ones_and_zeros(tiny) -> None:
    # the region as a boolean map: step k of 4 masks k region pixels (ties in the seeded order, all
    # inside), so no false alarm, and success from 2 region pixels on (HAND's comment on TAU)
    items = [_with(item, maps={"m": REGION.copy()}) for item in HAND]
    result = inpainting_game(tiny, items=items, options=InpaintingGameOptions(tau=TAU, steps=4, oracle=False))
    np.testing.assert_allclose(result.curves["m"]["sr"], [0, 0, 1, 1, 1])
    np.testing.assert_allclose(result.curves["m"]["far"], 0.0)


def test_reserved_series_names_empty_items_and_classifiers_are_refused(tiny) -> None:
    options = InpaintingGameOptions(tau=TAU)
    with pytest.raises(InvalidRequest) as caught:
        inpainting_game(tiny, items=[_with(HAND[0], maps={"random": np.zeros((4, 4))})], options=options)
    assert caught.value.field == "items[0].maps"
    with pytest.raises(InvalidRequest) as caught:
        inpainting_game(tiny, items=[], options=options)
    assert caught.value.field == "items"
    classifier = prepared(zoo.planted_region_classifier(height=4, width=4, box=(1, 3, 1, 3)), {"kind": "classifier"})
    with pytest.raises(InvalidRequest) as caught:
        inpainting_game(classifier, items=HAND, options=options)
    assert caught.value.field == "model"


def test_false_alarm_rates_are_capped() -> None:
    rates = tuple(np.linspace(0.001, 1.0, MAX_FARS + 1).tolist())  # all valid rates: only their number is refused
    assert len(InpaintingGameOptions(tau=TAU, fars=rates[:MAX_FARS]).fars) == MAX_FARS
    with pytest.raises(InvalidRequest, match=f"at most {MAX_FARS}") as caught:
        options_from(InpaintingGameOptions, {"tau": TAU, "fars": list(rates)})
    assert caught.value.field == "fars"


def test_sr_at_far_takes_the_best_point_within_the_rate() -> None:
    sr, far = np.array([0, 0.4, 0.3, 0.9]), np.array([0, 0.02, 0.04, 0.2])  # SR need not grow with FAR
    assert sr_at_far(sr, far, 0.05) == 0.4 and sr_at_far(sr, far, 0.01) == 0.0 and sr_at_far(sr, far, 1.0) == 0.9


def _with(item: InpaintingItem, **changes) -> InpaintingItem:
    fields = {name: getattr(item, name) for name in ("original_probe", "original_mate", "inpainted_probe",
                                                      "inpainted_non_mate", "region", "maps", "name")}
    return InpaintingItem(**{**fields, **changes})


DEMO = Path(__file__).resolve().parents[2] / "service" / "faceaudit" / "demo" / "models"


def test_the_oracle_beats_the_random_map_on_demo_quadruplets() -> None:
    loaded = load_model(DEMO / "embedding.onnx")
    model = prepare(loaded, resolve_spec(loaded), RuntimeOptions(threads=2))
    rng = np.random.default_rng(7)
    items = []
    for k, part in enumerate(("skin", "hair", "mouth", "accessory") * 2):
        quad = quadruplet(sample_identity(rng), part, sample_nuisance(rng), sample_nuisance(rng), rng, size=64,
                          seeds=(2 * k, 2 * k + 1))
        items.append(InpaintingItem(quad.original_probe, quad.mate, quad.inpainted_probe, quad.inpainted_non_mate,
                                    quad.probe_region, name=f"{part}{k}"))
    result = inpainting_game(model, items=items, options=InpaintingGameOptions(tau=0.85, steps=20))
    assert result.summary["quadruplets"]["kept"] >= 3
    oracle, random = result.summary["oracle"], result.summary["random"]
    assert oracle["sr_at_far_0.01"] == 1.0  # the whole region is IP's: it matches IN by eq. 8, at FAR 0
    assert random["sr_at_far_0.05"] < 0.5 < oracle["sr_at_far_0.05"]
    assert result.curves["random"]["sr"][-1] == 1.0 and result.curves["random"]["far"][-1] == 1.0  # all pixels: IP
