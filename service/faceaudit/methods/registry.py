"""The catalogue of explanation methods: name → function, options class, model kinds it supports.

A method's registry name is its file name (`methods/corr_rise.py` → "corr_rise"); the CLI also
accepts hyphens ("corr-rise"). The server and the CLI look methods up here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest, UnsupportedModel
from faceaudit.models.graph import quantised_operators
from faceaudit.methods.cebp import CebpOptions, cebp
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.common import ExplainTarget, Progress, options_from
from faceaudit.methods.corr_rise import CorrRiseOptions, corr_rise
from faceaudit.methods.deconvnet import DeconvnetOptions, deconvnet
from faceaudit.methods.deeplift import DeepLiftOptions, deeplift
from faceaudit.methods.ebp import EbpOptions, ebp
from faceaudit.methods.ecebp import EcebpOptions, ecebp
from faceaudit.methods.eebp import EebpOptions, eebp
from faceaudit.methods.gweebp import GweebpOptions, gweebp
from faceaudit.methods.etcebp import EtcebpOptions, etcebp
from faceaudit.methods.gradcam import GradCamOptions, gradcam
from faceaudit.methods.gradcam_plus_plus import GradCamPlusPlusOptions, gradcam_plus_plus
from faceaudit.methods.gradient import GradientOptions, gradient
from faceaudit.methods.guided_backprop import GuidedBackpropOptions, guided_backprop
from faceaudit.methods.guided_gradcam import GuidedGradCamOptions, guided_gradcam
from faceaudit.methods.integrated_gradients import IntegratedGradientsOptions, integrated_gradients
from faceaudit.methods.kernel_shap import KernelShapOptions, kernel_shap
from faceaudit.methods.lime import LimeOptions, lime
from faceaudit.methods.lrp import LrpOptions, lrp
from faceaudit.methods.occlusion import OcclusionOptions, occlusion
from faceaudit.methods.pairwise_sim import PairwiseSimOptions, pairwise_sim
from faceaudit.methods.rise import RiseOptions, rise
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.methods.scorecam import ScoreCamOptions, scorecam
from faceaudit.methods.smoothgrad import SmoothGradOptions, smoothgrad
from faceaudit.methods.tcebp import TcebpOptions, tcebp
from faceaudit.methods.xface import XFaceOptions, xface

BOTH = frozenset({"classifier", "embedding"})
EMBEDDING = frozenset({"embedding"})


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[..., SaliencyMap]
    options: type
    kinds: frozenset[str]  # model kinds the method explains
    black_box: bool  # needs only the model's outputs (white-box methods refuse quantised models)
    context: frozenset[str] = frozenset()  # extra keyword arguments the method takes, e.g. correspondence


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("occlusion", occlusion, OcclusionOptions, BOTH, True),
        Method("rise", rise, RiseOptions, BOTH, True),
        Method("xface", xface, XFaceOptions, EMBEDDING, True),
        Method("corr_rise", corr_rise, CorrRiseOptions, EMBEDDING, True),
        Method("cis", cis, CisOptions, BOTH, True, frozenset({"correspondence"})),
        Method("lime", lime, LimeOptions, BOTH, True),
        Method("kernel_shap", kernel_shap, KernelShapOptions, BOTH, True),
        Method("gradient", gradient, GradientOptions, BOTH, False),
        Method("guided_backprop", guided_backprop, GuidedBackpropOptions, BOTH, False),
        Method("deconvnet", deconvnet, DeconvnetOptions, BOTH, False),
        Method("gradcam", gradcam, GradCamOptions, BOTH, False),
        Method("guided_gradcam", guided_gradcam, GuidedGradCamOptions, BOTH, False),
        Method("gradcam_plus_plus", gradcam_plus_plus, GradCamPlusPlusOptions, BOTH, False),
        Method("scorecam", scorecam, ScoreCamOptions, BOTH, False),
        Method("smoothgrad", smoothgrad, SmoothGradOptions, BOTH, False),
        Method("lrp", lrp, LrpOptions, BOTH, False),
        Method("deeplift", deeplift, DeepLiftOptions, BOTH, False),
        Method("integrated_gradients", integrated_gradients, IntegratedGradientsOptions, BOTH, False),
        Method("ebp", ebp, EbpOptions, BOTH, False),
        Method("cebp", cebp, CebpOptions, BOTH, False),
        Method("tcebp", tcebp, TcebpOptions, BOTH, False),
        Method("eebp", eebp, EebpOptions, BOTH, False),
        Method("gweebp", gweebp, GweebpOptions, EMBEDDING, False),
        Method("pairwise_sim", pairwise_sim, PairwiseSimOptions, EMBEDDING, False),
        Method("ecebp", ecebp, EcebpOptions, BOTH, False),
        Method("etcebp", etcebp, EtcebpOptions, BOTH, False),
    )
}


def get_method(name: str) -> Method:
    if not isinstance(name, str):
        raise InvalidRequest("method", f"{name!r} is not a method name; available: {', '.join(sorted(METHODS))}")
    key = name.strip().lower().replace("-", "_")
    if key not in METHODS:
        raise InvalidRequest("method", f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[key]


def explain(
    model: PreparedModel, method: str, *, image: np.ndarray, target: ExplainTarget,
    options: Mapping[str, Any] | Any | None = None, progress: Progress | None = None, **context: Any,
) -> SaliencyMap:
    """Run a method by name, with its options class or loosely typed values (from the CLI or a request)."""
    entry = get_method(method)
    kind = model.spec.require("kind")
    if kind not in entry.kinds:
        raise InvalidRequest("method", f"{entry.name} explains {' and '.join(sorted(entry.kinds))} models, not {kind}s")
    for name in context.keys() - entry.context:
        raise InvalidRequest(name, f"{entry.name} takes no {name!r}")
    if not entry.black_box and (quantised := quantised_operators(model.loaded.proto)):
        raise UnsupportedModel(f"{entry.name} needs float operators to propagate through; the model has quantised "
                               f"{', '.join(quantised)}: use a black-box method ({', '.join(black_box_methods())})")
    chosen = options if isinstance(options, entry.options) else options_from(entry.options, options)
    return entry.run(model, image=image, target=target, options=chosen, progress=progress, **context)


def black_box_methods() -> list[str]:
    return sorted(name for name, method in METHODS.items() if method.black_box)
