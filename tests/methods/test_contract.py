"""Every registered method at once: shape, finiteness, determinism, sensitivity to the target,
documented defaults, and refusal of model kinds it does not explain."""

from __future__ import annotations

import dataclasses
import re
import sys

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.registry import METHODS, explain, get_method
from faceaudit.testing import zoo

from tests.conftest import prepared

# Cheap options per method; a method registered without an entry here fails test_every_method_is_covered.
FAST = {
    "occlusion": {"patch": 8, "stride": 4},
    "xface": {"patch": 8, "stride": 4},
    "rise": {"masks": 300, "seed": 5},
    "corr_rise": {"masks": 300, "seed": 5},
    "cis": {"patch": 8, "stride": 4},
    "lime": {"samples": 64, "segmentation": "grid", "segments": 16},
    "kernel_shap": {"samples": 64, "segmentation": "grid", "segments": 16},
    "gradient": {},
    "guided_backprop": {},
    "deconvnet": {},
    "gradcam": {"layer": "Mul_2_out0"},  # the planted models have no Conv: Grad-CAM at their masked input
    "guided_gradcam": {"layer": "Mul_2_out0"},  # as gradcam
    "gradcam_plus_plus": {"layer": "Mul_2_out0"},  # as gradcam
    "scorecam": {"layer": "Mul_2_out0"},  # as gradcam
    "smoothgrad": {"samples": 4},
    "lrp": {},
    "deeplift": {},
    "integrated_gradients": {"steps": 8},
    "ebp": {},
    "cebp": {},
    "tcebp": {},
    "eebp": {},
    "ecebp": {},
    "etcebp": {},
    "gweebp": {},
    "pairwise_sim": {},
}
# Methods that need an architecture the planted models lack: PairwiseSIM decomposes a pooled feature map.
MODEL_FOR = {"pairwise_sim": "pooled_embedding"}
CASES = [(name, kind) for name, method in sorted(METHODS.items()) for kind in sorted(method.kinds)]


@pytest.fixture(scope="module")
def models():
    return {"classifier": prepared(zoo.planted_region_classifier(), {"kind": "classifier"}),
            "embedding": prepared(zoo.planted_region_embedding(), {"kind": "embedding"}),
            "pooled_embedding": prepared(zoo.iresnet_embedding(), {"kind": "embedding"})}


def _faces(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (32, 32, 3)).astype(np.float32) for _ in range(n)]


NEEDS_NON_MATE = {"gweebp"}  # the triplet gain needs both references


def _targets(kind: str, name: str = "") -> tuple[ExplainTarget, ExplainTarget]:
    if kind == "classifier":
        return ExplainTarget(class_index=0), ExplainTarget(class_index=1)
    mate_a, mate_b, non_mate = _faces(7, 3)
    other = non_mate if name in NEEDS_NON_MATE else None
    return ExplainTarget(mate=mate_a, non_mate=other), ExplainTarget(mate=mate_b, non_mate=other)


def test_every_method_is_covered():
    assert set(FAST) == set(METHODS)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_contract(models, name, kind):
    model, (image,) = models[MODEL_FOR.get(name, kind)], _faces(3, 1)
    first, second = _targets(kind, name)
    a = explain(model, name, image=image, target=first, options=FAST[name])
    again = explain(model, name, image=image, target=first, options=FAST[name])
    other = explain(model, name, image=image, target=second, options=FAST[name])
    assert a.values.shape == (32, 32) and a.values.dtype == np.float32 and np.isfinite(a.values).all()
    assert a.method == name and a.model_sha256 == model.loaded.sha256 and a.forward_passes > 0
    np.testing.assert_array_equal(a.values, again.values)  # deterministic for a seed
    assert not np.allclose(a.values, other.values)  # the target matters
    assert np.abs(a.values).max() > 0  # never a silently empty map
    assert a.options == dataclasses.asdict(get_method(name).options(**FAST[name]))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_kinds_a_method_does_not_explain_are_refused(models, name):
    for kind in {"classifier", "embedding"} - METHODS[name].kinds:
        with pytest.raises(InvalidRequest) as info:
            explain(models[kind], name, image=_faces(3, 1)[0], target=_targets(kind, name)[0], options=FAST[name])
        assert info.value.field == "method"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_documented_defaults_are_the_real_defaults(name):
    """Each `name=value` the module docstring's Defaults section states must be the dataclass default."""
    method = METHODS[name]
    doc = sys.modules[method.run.__module__].__doc__ or ""
    section = doc.split("Defaults:", 1)[1] if "Defaults:" in doc else ""
    defaults = {f.name: f.default for f in dataclasses.fields(method.options)}
    stated: dict[str, str] = {}
    for key, value in re.findall(r"\b([a-z_]+)=([0-9.]+|[a-z_]+)\b", section):
        stated.setdefault(key, value)  # the first statement of an option is its default
    checked = 0
    for key, value in stated.items():
        if key in defaults and not isinstance(defaults[key], tuple):
            assert str(defaults[key]) == value or float(defaults[key]) == float(value), (key, value, defaults[key])
            checked += 1
    assert checked > 0, f"{name}'s docstring states no checkable default"
