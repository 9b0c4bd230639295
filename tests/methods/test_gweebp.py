"""gweEBP: the gain's gradient against finite differences, eq. 6, the hinge's zero gradient, the
planted region, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.eebp import eebp
from faceaudit.methods.gweebp import GweebpOptions, gain_seed, gweebp
from faceaudit.testing import zoo
from faceaudit.whitebox import backward, instrument_graph
from faceaudit.whitebox.gradient_weighting import gradient_weighted, weigh
from faceaudit.whitebox.instrument import SIMILARITY, append_similarity_head

from tests.conftest import prepared
from tests.methods.test_ebp import box_share
from tests.whitebox import nets


def _triplet_net(references: np.ndarray):
    """float32 (N, 4) → h = PRelu(W1 x + b1) (N, 6) → e = W2 h + b2 (N, 3), with the similarity head
    (float32: the head's references are)."""
    n = nets.Net(3, np.float32)
    hidden = n.op("PRelu", [n.op("Gemm", ["x", n.normal(6, 4, scale=1.0), n.normal(6, scale=0.3)], transB=1),
                            n.const([0.25])])
    n.op("Gemm", [hidden, n.normal(3, 6, scale=1.0), n.normal(3, scale=0.3)], transB=1)
    model = n.model(["N", 4], 3)
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    wb = instrument_graph(append_similarity_head(model, "y", references), "x", SIMILARITY, similarity=True)
    return wb, hidden, w


def _gain(e: np.ndarray, refs: np.ndarray, gain: str) -> float:
    a = e / np.linalg.norm(e)
    p, q = refs
    if gain == "similarity":
        return float(a @ p - a @ q)
    return max(0.0, float(np.linalg.norm(a - q) - np.linalg.norm(a - p)))


@pytest.mark.parametrize("gain", ["similarity", "hinge"])
def test_the_gradient_weighting_matches_finite_differences_of_the_gain(gain):
    """g = ∂G/∂h at the hidden layer against central differences of G(h) computed in numpy; ã per eq. 6."""
    x = np.array([[0.3, -1.2, 0.8, 0.5]], np.float32)
    rng = np.random.default_rng(0)
    for _ in range(20):  # references for which the hinge is active (the probe nearer the mate)
        refs = rng.normal(size=(2, 3))
        wb, hidden, w = _triplet_net(refs)
        acts = wb.forward(x)
        cos = acts.values[SIMILARITY][0]
        if cos[0] > cos[1] + 0.1:
            break
    seed, value = gain_seed(acts.values[SIMILARITY], gain)
    gradients = backward(wb.graph, acts.values, seed, "gradient", trace=True)
    h = acts.values[hidden][0].astype(np.float64)
    w2, b2 = w["c3"], w["c4"]
    refs = np.asarray(wb.graph.constants[f"{SIMILARITY}_references"], dtype=np.float64)  # as the head holds them
    assert value[0] == pytest.approx(_gain(w2 @ h + b2, refs, gain), rel=1e-5)
    step, numeric = 1e-6, np.zeros_like(h)
    for j in range(len(h)):
        up, down = h.copy(), h.copy()
        up[j] += step
        down[j] -= step
        numeric[j] = (_gain(w2 @ up + b2, refs, gain) - _gain(w2 @ down + b2, refs, gain)) / (2 * step)
    np.testing.assert_allclose(gradients[hidden][0], numeric, rtol=1e-4, atol=1e-6)
    responses = gradient_weighted(wb.graph, acts.values, seed)
    np.testing.assert_allclose(responses[hidden], weigh(acts.values[hidden], gradients[hidden]))
    assert "x" not in responses and SIMILARITY not in responses
    assert (h < 0).any() and (h > 0).any()  # PRelu: both branches of eq. 6 are exercised


def test_eq_6_by_hand():
    """â = (2, 2, −3, −3, 0), g = (0.5, −1, −2, 4, 7): ã = (1, 0, −6, 0, 0) — sign kept, opposite signs suppressed."""
    np.testing.assert_allclose(weigh(np.array([2.0, 2.0, -3.0, -3.0, 0.0]), np.array([0.5, -1.0, -2.0, 4.0, 7.0])),
                               [1.0, 0.0, -6.0, 0.0, 0.0])


def test_hinge_with_zero_gradient_is_refused():
    """A probe nearer the non-mate than the mate: G = 0 and no gradient; gain=hinge says to use similarity."""
    x = np.array([[0.3, -1.2, 0.8, 0.5]], np.float32)
    wb, _, _ = _triplet_net(np.eye(3)[:2])
    acts = wb.forward(x)
    e = acts.values["y"][0]
    wb, _, _ = _triplet_net(np.stack([-e, e]))  # mate opposite the probe, non-mate the probe itself
    acts = wb.forward(x)
    with pytest.raises(InvalidRequest) as info:
        gain_seed(acts.values[SIMILARITY], "hinge")
    assert info.value.field == "gain" and "gain=similarity" in str(info.value)
    seed, value = gain_seed(acts.values[SIMILARITY], "similarity")  # the default still explains it
    responses = gradient_weighted(wb.graph, acts.values, seed)
    assert value[0] < 0 and any(np.abs(r).sum() > 0 for r in responses.values())


def _triplet(seed: int):
    return np.random.default_rng(seed).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("gain", ["similarity", "hinge"])
def test_planted_region_embedding_puts_most_mass_in_the_box(gain):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    for seed in range(10):  # a triplet the hinge can explain (probe nearer the mate)
        image, mate, non_mate = _triplet(seed)
        try:
            exact = gweebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate),
                           options=GweebpOptions(gain=gain, smooth=0.0))
            break
        except InvalidRequest:
            continue
    assert exact.values.sum() == pytest.approx(1.0) and box_share(exact.values) == pytest.approx(1.0)
    smoothed = gweebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate),
                      options=GweebpOptions(gain=gain))
    assert box_share(smoothed.values) > 0.85 and smoothed.extra["gain"] == gain


def test_prelu_embedding_network_differs_from_eebp():
    model = prepared(zoo.iresnet_embedding(), {"kind": "embedding"})
    image, mate, non_mate = _triplet(4)
    target = ExplainTarget(mate=mate, non_mate=non_mate)
    result = gweebp(model, image=image, target=target)
    assert result.method == "gweebp" and result.values.min() >= 0 and result.values.sum() == pytest.approx(1.0)
    assert not np.allclose(result.values, eebp(model, image=image, target=target).values)


def test_classifiers_and_missing_non_mates_are_refused():
    image, mate, _ = _triplet(1)
    classifier = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    with pytest.raises(InvalidRequest) as info:
        gweebp(classifier, image=image, target=ExplainTarget(class_index=0))
    assert info.value.field == "target"
    embedding = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    with pytest.raises(InvalidRequest) as info:
        gweebp(embedding, image=image, target=ExplainTarget(mate=mate))
    assert info.value.field == "non_mate"


@pytest.mark.parametrize(("values", "field"), [({"gain": "triplet"}, "gain"), ({"smooth": -1}, "smooth"),
                                               ({"layer": ""}, "layer")])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        GweebpOptions(**values)
    assert info.value.field == field
