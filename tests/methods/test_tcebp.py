"""Truncated contrastive EBP: the closed form of §V-B on a ReLU network, both ε rules, the planted region, options."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.cebp import CebpOptions, cebp
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.tcebp import TcebpOptions, mass_threshold, tcebp
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_cebp import K, conditional, contrast_seed, mlp_case, pixel_map
from tests.methods.test_ebp import box_share


def truncated(f: np.ndarray, eps: float) -> np.ndarray:
    kept = np.where(f > eps, f, 0.0)
    return kept / kept.sum() if kept.sum() > 0 else kept


def maps(contrast: object, seed: int = 0):
    model, image, w1, w2, x, h = mlp_case(seed)
    top = -w2 if contrast == "dual" else w2
    p = pixel_map(np.eye(4)[K] @ conditional(w2, h) @ conditional(w1, x))
    n = pixel_map(contrast_seed(contrast) @ conditional(top, h) @ conditional(w1, x))
    return model, image, p, n


@pytest.mark.parametrize("contrast", [0, "others", "dual"])
@pytest.mark.parametrize("percentile", [70.0, 40.0])
def test_percentile_rule_closed_form(contrast, percentile):
    """T = max(⌊P⌋_ε/‖⌊P⌋_ε‖ − ⌊N⌋_ε/‖⌊N⌋_ε‖, 0), ε = the percentile of P (float32 activations: rtol 1e-4)."""
    model, image, p, n = maps(contrast)
    eps = np.percentile(p, percentile)
    t = np.maximum(truncated(p, eps) - truncated(n, eps), 0.0)
    result = tcebp(model, image=image, target=ExplainTarget(class_index=K),
                   options=TcebpOptions(contrast=contrast, percentile=percentile, smooth=0.0))
    np.testing.assert_allclose(result.values, t / t.sum(), rtol=1e-4, atol=1e-6 * t.max())
    assert result.extra["epsilon"] == pytest.approx(eps, rel=1e-4)
    assert (p > eps).mean() == pytest.approx(1 - percentile / 100, abs=1 / 64)  # the rule keeps the top 30 %


def test_mass_rule_closed_form_keeps_the_top_of_each_maps_mass():
    model, image, p, n = maps("others", seed=1)
    result = tcebp(model, image=image, target=ExplainTarget(class_index=K),
                   options=TcebpOptions(truncation="mass", contrast="others", smooth=0.0))
    eps_p, eps_n = result.extra["epsilon"], result.extra["epsilon_contrast"]
    for f, eps in ((p, eps_p), (n, eps_n)):
        kept = f[f > eps * (1 + 1e-4)]
        assert kept.sum() >= 0.8 * f.sum() * (1 - 1e-4)  # at least 80 % of the mass kept
        assert kept.sum() - kept.min() < 0.8 * f.sum()  # and no value more than needed
    t = np.maximum(truncated(p, eps_p * (1 + 1e-4)) - truncated(n, eps_n * (1 + 1e-4)), 0.0)
    np.testing.assert_allclose(result.values, t / t.sum(), rtol=1e-4, atol=1e-6 * t.max())


def test_mass_threshold():
    values = np.array([0.5, 0.3, 0.1, 0.1, 0.0, -0.2])
    assert mass_threshold(values, 0.8) == 0.1  # 0.5 + 0.3 = 0.8: both 0.1 dropped
    assert mass_threshold(values, 0.85) == 0.0  # needs a 0.1: the positive values all kept (tie)
    assert mass_threshold(values, 0.5) == 0.3
    assert mass_threshold(np.zeros(4), 0.8) == 0.0


def test_truncation_removes_the_low_excitation_tail_of_cebp():
    """Without truncation (percentile 0 on a map with zeros) tcEBP is the difference of unit-mass maps;
    with it, pixels where the target's map is low carry no contrast."""
    model, image, p, _ = maps("others")
    target = ExplainTarget(class_index=K)
    full = tcebp(model, image=image, target=target, options=TcebpOptions(contrast="others", smooth=0.0))
    low = p <= np.percentile(p, 70)
    assert full.values[low].max() == 0.0
    plain = cebp(model, image=image, target=target, options=CebpOptions(contrast="others", smooth=0.0))
    assert plain.values[low].max() > 0.0


@pytest.mark.parametrize("truncation", ["percentile", "mass"])
@pytest.mark.parametrize("contrast", [1, "others", "dual"])
def test_planted_classifier_puts_the_mass_in_the_box(truncation, contrast):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    exact = tcebp(model, image=image, target=ExplainTarget(class_index=2),
                  options=TcebpOptions(truncation=truncation, contrast=contrast, smooth=0.0))
    assert exact.values.sum() == pytest.approx(1.0) and box_share(exact.values) == pytest.approx(1.0)
    smoothed = tcebp(model, image=image, target=ExplainTarget(class_index=2),
                     options=TcebpOptions(truncation=truncation, contrast=contrast))
    assert smoothed.values.min() >= 0 and box_share(smoothed.values) > 0.85


def test_embedding_with_and_without_a_non_mate():
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    image, mate, non_mate = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    both = tcebp(model, image=image, target=ExplainTarget(mate=mate, non_mate=non_mate))
    alone = tcebp(model, image=image, target=ExplainTarget(mate=mate))
    assert both.extra["contrast"] == "non_mate" and alone.extra["contrast"] == "dual of the mate"
    for result in (both, alone):
        assert result.values.sum() == pytest.approx(1.0) and box_share(result.values) > 0.85
    assert not np.allclose(both.values, alone.values)


@pytest.mark.parametrize(("values", "field"), [
    ({"truncation": "otsu"}, "truncation"), ({"percentile": 100}, "percentile"), ({"percentile": -1}, "percentile"),
    ({"percentile": float("nan")}, "percentile"), ({"mass": 0}, "mass"), ({"mass": 1.5}, "mass"),
    ({"mass": True}, "mass"), ({"contrast": "none"}, "contrast"), ({"smooth": 1.0}, "smooth"), ({"layer": ""}, "layer"),
])
def test_options_are_validated(values, field):
    with pytest.raises(InvalidRequest) as info:
        TcebpOptions(**values)
    assert info.value.field == field
