"""PairwiseSIM: the probe–mate cosine similarity decomposed over the spatial positions of the last feature map.

Math (Stylianou, Souvenir, Pless 2019, §3; Wang et al. 2025 use it as a baseline):
    For an embedding e = h(mean_i F(i)) read from the feature map F (C, h·w) through global average
    pooling and an affine head h (Flatten, Gemm, BatchNormalization, ... — the identity in the
    paper), e = mean_i φ(i) with φ(i) = h(F(i)), the embedding of one position. Then
        cos(e_p, e_m) = Σ_i  φ_p(i) · e_m / (h·w · ‖e_p‖ ‖e_m‖)  =:  Σ_i S(i)
    and S (h, w) is the probe's similarity map: its cells sum to the cosine exactly. With a
    non-mate the map is S against the mate minus S against the non-mate. A final L2
    normalisation (LpNormalization) is skipped: the cosine does not see it. S is upsampled
    bilinearly (half-pixel centres) to the image; the cells are in the metadata.
    The head is checked: mean_i φ(i) must reproduce the model's embedding, or the model is refused
    (a non-affine head after the pooling has no such decomposition).
Reference:
    Stylianou, Souvenir, Pless. Visualizing deep similarity networks. WACV 2019.
Defaults:
    layer=last_pool: the input of the last GlobalAveragePool (or spatial ReduceMean) before the
    embedding — the paper's last convolutional feature map; no other layer is allowed because the
    decomposition needs the pooling right after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.utils

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions, Session
from faceaudit.errors import InvalidRequest, UnsupportedModel
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_request
from faceaudit.methods.gradient import instrument_for
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.instrument import Instrumented
from faceaudit.whitebox.maps import upsample_bilinear

HEAD_TOLERANCE = 1e-4  # relative: float32 sums in a different order, not a non-affine head


@dataclass(frozen=True)
class PairwiseSimOptions:
    """The feature map decomposed: only "last_pool" (the input of the pooling before the embedding)."""

    layer: str = "last_pool"

    def __post_init__(self) -> None:
        if self.layer != "last_pool":
            raise InvalidRequest("layer", f"{self.layer!r}: PairwiseSIM reads the feature map pooled into the "
                                          "embedding, layer=last_pool")


def _pooling(wb: Instrumented, embedding: str) -> onnx.NodeProto:
    """The last spatial average pooling on the way from the input to the embedding."""
    nodes, _ = wb.graph.path()
    producers = {out: node for node in nodes for out in node.output}
    pools = [n for n in nodes if n.op_type == "GlobalAveragePool"
             or n.op_type == "ReduceMean" and _spatial_axes(n)]
    ancestors = _ancestors(producers, embedding)
    pools = [n for n in pools if n.output[0] in ancestors]
    if not pools:
        raise UnsupportedModel("PairwiseSIM needs global average pooling before the embedding (Stylianou et al.); "
                               "this model has none")
    return pools[-1]


def _spatial_axes(node: onnx.NodeProto) -> bool:
    axes = next((list(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == "axes"), None)
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def _ancestors(producers: dict[str, onnx.NodeProto], name: str) -> set[str]:
    seen, stack = set(), [name]
    while stack:
        tensor = stack.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in producers:
            stack.extend(producers[tensor].input)
    return seen


def _unnormalised(wb: Instrumented, embedding: str) -> str:
    """The embedding before a final L2 normalisation, which the cosine ignores: an LpNormalization, or
    torch's F.normalize, x / Expand(Clip(ReduceL2(x) over the feature axis, ε))."""
    producers = {out: node for node in wb.graph.nodes for out in node.output}
    node = producers.get(embedding)
    if node is not None and node.op_type == "LpNormalization":
        return node.input[0]
    if node is not None and node.op_type == "Div":
        norm = producers.get(node.input[1])
        while norm is not None and norm.op_type in ("Expand", "Clip"):  # the broadcast and the ε floor
            norm = producers.get(norm.input[0])
        if (norm is not None and norm.op_type == "ReduceL2" and norm.input[0] == node.input[0]
                and _feature_axis_only(wb, norm)):
            return node.input[0]
    return embedding


def _feature_axis_only(wb: Instrumented, reduce: onnx.NodeProto) -> bool:
    """ReduceL2 over axis 1 of a (B, D) embedding (axes as an attribute before opset 18, an input after)."""
    axes = next((list(onnx.helper.get_attribute_value(a)) for a in reduce.attribute if a.name == "axes"), None)
    if axes is None and len(reduce.input) > 1 and reduce.input[1] in wb.graph.constants:
        axes = [int(a) for a in np.ravel(wb.graph.constants[reduce.input[1]])]
    return axes in ([1], [-1])


def _head(model: PreparedModel, wb: Instrumented, pooled: str, embedding: str) -> Session:
    """A session of the graph from the pooled vector to the embedding, cached on the model."""
    key = ("pairwise_sim_head", pooled, embedding, id(wb))
    if key not in model.derived:
        head = onnx.utils.Extractor(wb.proto).extract_model([pooled], [embedding])
        model.derived[key] = Session(head, pooled, [embedding], RuntimeOptions(threads=model.session.threads))
    return model.derived[key]


def pairwise_sim(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: PairwiseSimOptions = PairwiseSimOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """The probe's share of its cosine to the mate (minus the non-mate's), per position of the pooled feature map."""
    run = Run("pairwise_sim", model, target, options)
    image, target = check_request(model, image, target)
    wb = instrument_for(model, target)
    faces = [image, target.mate] + ([target.non_mate] if target.non_mate is not None else [])
    acts = wb.forward(to_model_input(np.stack(faces), model.spec))
    embedding = _unnormalised(wb, model.spec.require("output_name"))
    pool = _pooling(wb, embedding)
    features = np.asarray(acts.values[pool.input[0]], dtype=np.float64)  # (F, C, h, w)
    if features.ndim != 4:
        raise UnsupportedModel(f"PairwiseSIM: the pooled tensor {pool.input[0]!r} is not a (N, C, H, W) feature map")
    count, channels, height, width = features.shape
    pooled_shape = np.shape(acts.values[pool.output[0]])[1:]
    per_position = features.transpose(0, 2, 3, 1).reshape(-1, channels).reshape(-1, *pooled_shape)
    head = _head(model, wb, pool.output[0], embedding)
    phi = np.concatenate([head.run(per_position[i : i + head.max_batch].astype(np.float32))[0]
                          for i in range(0, len(per_position), head.max_batch)]).astype(np.float64)
    phi = phi.reshape(count, height * width, -1)
    e = phi.mean(axis=1)
    actual = np.asarray(acts.values[embedding], dtype=np.float64).reshape(count, -1)
    if not np.allclose(e, actual, rtol=HEAD_TOLERANCE, atol=HEAD_TOLERANCE * np.abs(actual).max()):
        raise UnsupportedModel("PairwiseSIM: the layers between the pooling and the embedding are not affine, so the "
                               "similarity does not decompose over positions (Stylianou et al. assume pooling, then "
                               "linear layers)")
    norms = np.linalg.norm(e, axis=1)
    cells = [phi[0] @ e[r] / (height * width * norms[0] * norms[r]) for r in range(1, count)]
    map_cells = (cells[0] - cells[1] if len(cells) > 1 else cells[0]).reshape(height, width)
    values = upsample_bilinear(map_cells, (model.spec.require("height"), model.spec.require("width")))
    if progress is not None:
        progress(1, 1, "pairwise_sim")
    return run.result(values, acts.stats, extra={
        "graph": "instrumented", "layer": pool.input[0], "layer_size": [height, width],
        "cells": map_cells.tolist(), "similarity": float(map_cells.sum()),
    })
