"""X-Face: occlusion maps of a face verification pair (probe P, mate M, optional non-mate N).

Math: P_w is P with window w replaced by P's own fill (as in occlusion.py), e(·) the embedding.
    probe: d_w = cos(e(P), e(M)) − cos(e(P_w), e(M))
    both:  d_w = cos(e(P), e(M)) − cos(e(P_w), e(M_w))      (both faces occluded at the same place)
    S(x, y) = mean of d_w over the windows covering (x, y), as in occlusion.py.
    With a non-mate the map is S(mate) − S(non-mate), the non-mate term being d_w with M replaced
    by N (in mode both, N occluded at w too): the contrastive use of Wang et al. 2025, §4.2.5.
    Mode probe is exactly pair occlusion (occlusion.py with the same options, same windows code).
    Knoche et al.'s per-window cosine distance deviation, dist_w − dist, equals d_w; their "method
    2" (occluded face against the unoccluded other) is mode probe, "method 3" (1:1 occluded pairs)
    mode both.
Reference:
    Knoche, Teepe, Hörmann, Rigoll. Explainable model-agnostic similarity and confidence in face
    verification. WACV Workshops 2023. Official code: github.com/Martlgap/x-face-verification
    (MapGenerator), which Wang et al. (Pattern Recognition Letters 2025, §4.2.5) ran.
Defaults:
    stride=5 and fill=zero (black: fill_value 0.0 on [0, 1] images) are MapGenerator's defaults.
    MapGenerator averages maps of three patch sides (7, 14, 28); we compute one, patch=14, the
    middle one (average maps of several runs to get closer to it). mode=probe (one forward pass per
    window; both needs 2, 3 with a non-mate); chunk=64 windows per chunk; blur_sigma and
    dataset_mean as occlusion.py.
Differences from the official code, on purpose: our windows reach the border (its starts stop
before size − patch, leaving the bottom and right strips unoccluded, and cv2.rectangle's inclusive
corners make its patches patch + 1 px wide); each pixel averages the windows covering it (it takes
the mean over all windows divided by patch²); no Gaussian blur afterwards and no rescaling to
[0, 1] (no hidden post-processing). Its default "method 1" (each occluded probe against every
occluded mate) is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import OutputTarget, Scorer
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request, scoring_target
from faceaudit.methods.occlusion import OcclusionOptions, occlude, score_drop
from faceaudit.methods.saliency_map import SaliencyMap

MODES = ("probe", "both")
_SIGNS = np.array([1.0, -1.0])  # mate term minus non-mate term


@dataclass(frozen=True)
class XFaceOptions(OcclusionOptions):
    """Occlusion options with X-Face's defaults, and which faces are occluded: `probe` or `both`."""

    patch: int = 14
    stride: int = 5
    mode: str = "probe"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise InvalidRequest("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")


def xface(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: XFaceOptions = XFaceOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """X-Face map of the probe `image` against the mate (minus against the non-mate, if given)."""
    run = Run("xface", model, target, options)
    if model.spec.require("kind") != "embedding":
        raise InvalidRequest("target", "xface explains embedding models against a mate, not classifiers")
    image, target = check_request(model, image, target)
    if options.mode == "probe":
        scorer = Scorer(model, scoring_target(model, target))
        values, count = occlude(scorer, [image], options, drop=score_drop, progress=progress, phase="xface")
    else:
        faces = [image, target.mate] + ([target.non_mate] if target.non_mate is not None else [])
        scorer = Scorer(model, OutputTarget())
        values, count = occlude(scorer, faces, options, drop=pair_drop, progress=progress, phase="xface")
    return run.result(values, scorer.stats, extra={"windows": count})


def pair_drop(original: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """d_w from embeddings of (probe, mate[, non-mate]): unoccluded (k, D), occluded (n, k, D) -> (n,)."""
    drops = probe_similarities(original) - probe_similarities(occluded)
    return drops @ _SIGNS[: drops.shape[-1]]


def probe_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of the first embedding to each of the others: (..., k, D) -> (..., k − 1)."""
    vectors = embeddings.astype(np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if (norms == 0).any():
        raise ModelOutputError("the model returned an all-zero embedding for an occluded face: cosine undefined")
    unit = vectors / norms
    return np.einsum("...d,...kd->...k", unit[..., 0, :], unit[..., 1:, :])
