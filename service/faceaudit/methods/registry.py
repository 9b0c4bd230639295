"""The catalogue of explanation methods: name → function, options class, model kinds it supports.

A method's registry name is its file name (`methods/corr_rise.py` → "corr_rise"); the CLI also
accepts hyphens ("corr-rise"). The server and the CLI look methods up here and nowhere else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.common import ExplainTarget, Progress, options_from
from faceaudit.methods.corr_rise import CorrRiseOptions, corr_rise
from faceaudit.methods.occlusion import OcclusionOptions, occlusion
from faceaudit.methods.rise import RiseOptions, rise
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.methods.xface import XFaceOptions, xface

BOTH = frozenset({"classifier", "embedding"})
EMBEDDING = frozenset({"embedding"})


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[..., SaliencyMap]
    options: type
    kinds: frozenset[str]  # model kinds the method explains
    black_box: bool  # needs only the model's outputs

    @property
    def summary(self) -> str:
        """First line of the method module's docstring."""
        return (sys.modules[self.run.__module__].__doc__ or self.name).strip().splitlines()[0]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("occlusion", occlusion, OcclusionOptions, BOTH, True),
        Method("rise", rise, RiseOptions, BOTH, True),
        Method("xface", xface, XFaceOptions, EMBEDDING, True),
        Method("corr_rise", corr_rise, CorrRiseOptions, EMBEDDING, True),
        Method("cis", cis, CisOptions, BOTH, True),
    )
}


def get_method(name: str) -> Method:
    key = name.strip().lower().replace("-", "_")
    if key not in METHODS:
        raise InvalidRequest("method", f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[key]


def explain(
    model: PreparedModel, method: str, *, image: np.ndarray, target: ExplainTarget,
    options: Mapping[str, Any] | None = None, progress: Progress | None = None, **context: Any,
) -> SaliencyMap:
    """Run a method by name with loosely typed options (from the CLI or a request)."""
    entry = get_method(method)
    kind = model.spec.require("kind")
    if kind not in entry.kinds:
        raise InvalidRequest("method", f"{entry.name} explains {' and '.join(sorted(entry.kinds))} models, not {kind}s")
    return entry.run(model, image=image, target=target, options=options_from(entry.options, options),
                     progress=progress, **context)
