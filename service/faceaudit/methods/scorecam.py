"""Score-CAM: a layer's activation maps, used as soft masks on the image, weighted by the scores they keep.

Math (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu 2020, eqs. 3–8 and the authors' code):
    H_k = upsample(A_k) normalised to [0, 1] (min–max per channel; constant channels are skipped)
    α_k = s(I ⊙ H_k + F ⊙ (1 − H_k))          (F the fill image: what the mask removes)
    L   = ReLU(Σ_k α_k · upsample(A_k))
    A is the layer's (C, h, w) feature map from the instrumented model, upsampled bilinearly to the
    image as Grad-CAM's map is; s is the class score of the original model (softmax under the
    spec), or the cosine to the mate minus the cosine to the non-mate. The masked images are scored
    in batches by the black-box scorer on the original (uninstrumented) model.
    The paper's eq. 8 subtracts the baseline's score s(F) from every α_k; the authors' code does
    not, and neither do we: the code is what the published maps came from.
Reference:
    Wang et al. Score-CAM: score-weighted visual explanations for convolutional neural networks.
    CVPR workshops 2020. John et al. 2021 compare CMS against it (win %).
Defaults:
    layer=last_conv as `gradcam`; fill=zero (the code multiplies the normalised input tensor by H_k,
    which in pixel space is the spec's mean colour: fill=constant with that colour reproduces it);
    chunk=64 masked images per streamed chunk (engineering).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.methods.common import (
    ExplainTarget, Progress, Run, check_int, chunk_size, contrast, scoring_target,
)
from faceaudit.methods.gradient import instrumented_forward
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.maps import channels_first, upsample_bilinear


@dataclass(frozen=True)
class ScoreCamOptions(FillOptions):
    """The layer ("last_conv", "input" or a tensor name), the fill masks reveal, masked images per chunk."""

    layer: str = "last_conv"
    chunk: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InvalidRequest("layer", f"{self.layer!r} must be a tensor name, 'last_conv' or 'input'")
        check_int("chunk", self.chunk, 1, 4096)
        super().__post_init__()


def scorecam(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: ScoreCamOptions = ScoreCamOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Score-CAM map for a class or a mate (and non-mate)."""
    run = Run("scorecam", model, target, options)
    target, wb, acts = instrumented_forward(model, image, target)
    image = np.asarray(image, dtype=np.float32)
    layer = wb.layer(options.layer, acts.values)
    is_input = layer == wb.graph.input_name
    features = channels_first(np.asarray(acts.values[layer], dtype=np.float64), is_input=is_input,
                              layout=model.spec.require("layout"))[0]
    size = (model.spec.require("height"), model.spec.require("width"))
    upsampled = np.stack([upsample_bilinear(a, size) for a in features]).astype(np.float64)
    low, high = upsampled.min(axis=(1, 2)), upsampled.max(axis=(1, 2))
    kept = np.flatnonzero(high > low)
    if not len(kept):
        raise ModelOutputError(f"Score-CAM at {layer!r}: every activation map is constant for this image")
    fill = options.baseline(image)
    step = chunk_size(options.chunk, image)

    def masked() -> Iterator[np.ndarray]:
        for start in range(0, len(kept), step):
            ks = kept[start : start + step]
            masks = ((upsampled[ks] - low[ks, None, None]) / (high - low)[ks, None, None])[..., None]
            yield (image * masks + fill * (1.0 - masks)).astype(np.float32)

    scorer = Scorer(model, scoring_target(model, target))
    weights, done = [], 0
    for scores in scorer.stream(masked()):
        weights.append(contrast(scores))
        done += len(scores)
        if progress is not None:
            progress(done, len(kept), "scorecam")
    cam = np.maximum(np.tensordot(np.concatenate(weights), upsampled[kept], axes=1), 0.0)
    return run.result(cam, [acts.stats, scorer.stats], signed=False, extra={
        "graph": "instrumented (activations), original (scores)", "layer": layer,
        "layer_size": list(features.shape[1:]), "masks": int(len(kept)), "constant_channels": int(len(features) - len(kept)),
    })
