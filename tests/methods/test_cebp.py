"""Contrastive EBP: closed forms on a one-hidden-layer ReLU network, mass, the planted region, options."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.cebp import CebpOptions, cebp
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import explain
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_ebp import box_share
from tests.whitebox import nets


def conditional(weights: np.ndarray, below: np.ndarray) -> np.ndarray:
    """[i, j] = P(a_j | a_i) = w⁺_ij a_j / Σ_j w⁺_ij a_j (0 where nothing excites unit i)."""
    excitation = np.maximum(weights, 0.0) * below[None, :]
    total = excitation.sum(axis=1, keepdims=True)
    return np.divide(excitation, total, out=np.zeros_like(excitation), where=total > 0)


def mlp_case(seed: int = 0):
    """The prepared MLP, an image, W1, W2, the input x and the hidden activations h = relu(W1 x + b1)."""
    proto = nets.mlp_classifier(seed)
    w = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    model = prepared(proto, {"kind": "classifier", "input_name": "x", "output_name": "y"})
    image = np.random.default_rng(seed).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    x = (image.astype(np.float64) / 255.0).transpose(2, 0, 1).reshape(-1)
    return model, image, w["W1"], w["W2"], x, np.maximum(w["W1"] @ x + w["b1"], 0.0)


def pixel_map(p_x: np.ndarray) -> np.ndarray:
    return p_x.reshape(3, 8, 8).sum(axis=0)


def unit_mass(values: np.ndarray) -> np.ndarray:
    return values / values.sum()


K = 3


def contrast_seed(contrast: object, classes: int = 4) -> np.ndarray:
    if contrast == "others":
        return (1.0 - np.eye(classes)[K]) / (classes - 1)
    return np.eye(classes)[K if contrast == "dual" else contrast]


@pytest.mark.parametrize("contrast", [0, "others", "dual"])
def test_difference_form_closed_form(contrast):
    """C = max(P − N, 0) at the pixels, P = e_k·cond(W2, h)·cond(W1, x), N with the contrast's seed
    (and −W2 for the dual). Tolerance: the model's activations are float32."""
    model, image, w1, w2, x, h = mlp_case()
    p = np.eye(4)[K] @ conditional(w2, h) @ conditional(w1, x)
    top = -w2 if contrast == "dual" else w2
    n = contrast_seed(contrast) @ conditional(top, h) @ conditional(w1, x)
    expected = unit_mass(np.maximum(pixel_map(p) - pixel_map(n), 0.0))
    result = cebp(model, image=image, target=ExplainTarget(class_index=K),
                  options=CebpOptions(contrast=contrast, smooth=0.0))
    np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6 * expected.max())
    assert result.values.min() >= 0 and result.values.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("contrast", [1, "others", "dual"])
def test_zhang_form_closed_form_contrast_at_the_hidden_layer(contrast):
    """c = max(P_h − N_h, 0) at the top layer's input h, then EBP down: c·cond(W1, x); mass is conserved."""
    model, image, w1, w2, x, h = mlp_case(1)
    top = -w2 if contrast == "dual" else w2
    c = np.maximum(np.eye(4)[K] @ conditional(w2, h) - contrast_seed(contrast) @ conditional(top, h), 0.0)
    expected = unit_mass(pixel_map(c @ conditional(w1, x)))
    for layer in ("top", "relu_2"):  # the default names the Gemm's input, the Relu's output
        result = cebp(model, image=image, target=ExplainTarget(class_index=K),
                      options=CebpOptions(form="zhang", contrast=contrast, contrast_layer=layer, smooth=0.0))
        np.testing.assert_allclose(result.values, expected, rtol=1e-4, atol=1e-6 * expected.max())
        assert result.extra["contrast_layer"] == "relu_2"
        assert result.extra["mass_at_layer"] == pytest.approx(result.extra["mass_at_contrast_layer"])
        # The dual's excitatory weights are the target's inhibitory ones: disjoint supports, nothing cancels.
        mass = result.extra["mass_at_contrast_layer"]
        assert mass == pytest.approx(1.0) if contrast == "dual" else 0 < mass < 1


def test_the_positive_part_at_the_contrast_layer_makes_the_forms_differ():
    model, image, *_ = mlp_case()
    target = ExplainTarget(class_index=K)
    difference = cebp(model, image=image, target=target, options=CebpOptions(smooth=0.0))
    zhang = cebp(model, image=image, target=target, options=CebpOptions(form="zhang", smooth=0.0))
    assert not np.allclose(difference.values, zhang.values)


@pytest.mark.parametrize("form", ["difference", "zhang"])
@pytest.mark.parametrize("contrast", [1, "others", "dual"])
def test_planted_classifier_puts_the_mass_in_the_box(form, contrast):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    exact = cebp(model, image=image, target=ExplainTarget(class_index=2),
                 options=CebpOptions(form=form, contrast=contrast, smooth=0.0))
    assert exact.values.sum() == pytest.approx(1.0) and box_share(exact.values) == pytest.approx(1.0)
    smoothed = cebp(model, image=image, target=ExplainTarget(class_index=2),
                    options=CebpOptions(form=form, contrast=contrast))
    assert box_share(smoothed.values) > 0.85


@pytest.mark.parametrize("form", ["difference", "zhang"])
def test_embedding_contrasts_the_mate_with_the_non_mate(form):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    options = CebpOptions(form=form, smooth=0.0)
    with_non_mate = cebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate), options=options)
    dual = cebp(model, image=image, target=ExplainTarget(mate=mate), options=options)
    assert with_non_mate.extra["contrast"] == "non_mate" and dual.extra["contrast"] == "dual of the mate"
    for result in (with_non_mate, dual):
        assert result.values.sum() == pytest.approx(1.0) and box_share(result.values) == pytest.approx(1.0)
    assert not np.allclose(with_non_mate.values, dual.values)


def test_contrast_given_as_text_from_the_cli():
    model, image, *_ = mlp_case()
    result = explain(model, "cebp", image=image, target=ExplainTarget(class_index=K), options={"contrast": "2"})
    assert result.options["contrast"] == 2


@pytest.mark.parametrize(("values", "field"), [
    ({"form": "torchray"}, "form"), ({"contrast": -1}, "contrast"), ({"contrast": "all"}, "contrast"),
    ({"contrast": True}, "contrast"), ({"contrast": 1.5}, "contrast"), ({"contrast_layer": ""}, "contrast_layer"),
    ({"smooth": -0.1}, "smooth"), ({"smooth": float("inf")}, "smooth"), ({"layer": ""}, "layer"),
])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        CebpOptions(**values)
    assert info.value.field == field


def test_contrasts_that_do_not_fit_the_model_are_refused():
    model, image, *_ = mlp_case()
    for contrast in (K, 4):  # the target itself, a class the model lacks
        with pytest.raises(InvalidRequest) as info:
            cebp(model, image=image, target=ExplainTarget(class_index=K), options=CebpOptions(contrast=contrast))
        assert info.value.field == "contrast"
    with pytest.raises(InvalidRequest) as info:
        cebp(model, image=image, target=ExplainTarget(class_index=K),
             options=CebpOptions(form="zhang", contrast_layer="y"))  # above the top layer
    assert info.value.field == "contrast_layer"
    embedding = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(InvalidRequest) as info:
        cebp(embedding, image=probe, target=ExplainTarget(mate=mate), options=CebpOptions(contrast=1))
    assert info.value.field == "contrast"
