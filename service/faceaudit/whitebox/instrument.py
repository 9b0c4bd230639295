"""The instrumented model: the user's model rewritten so that one run yields what the backward pass reads.

Rewrites (pure functions in the style of onnx's compose.py: each returns a checked copy and leaves
its argument untouched):

- `fold_batch_norms`: a BatchNormalization whose input is a Conv output read by nothing else is
  folded into that Conv, W' = W·s, b' = (b − mean)·s + β with s = γ/√(var + ε) per output channel.
  Exact in real arithmetic (float32 rounding aside). Excitation backprop then sees the layer the
  network really computes: with s < 0 the excitatory weights of W' are the negated inhibitory ones
  of W, which a separate BN rule could not express. Other BatchNormalizations keep their own rule.
- `append_similarity_head` (Wang et al. 2025 §2.1): for embedding models, Flatten →
  LpNormalization → Gemm whose rows are the normalised mate and non-mate embeddings; its outputs are
  the cosine similarities probe–mate and probe–non-mate, a two-class classifier that EBP and the
  gradient methods explain like any other.
- `expose_outputs`: every tensor the backward pass reads becomes a graph output, typed by
  onnx.shape_inference (float32 where it leaves the element type open; the checker needs a shape,
  so a tensor of unknown rank is refused).

The instrumented graph is slower than the user's (exposed intermediates stop onnxruntime fusing
Conv+BN and friends); black-box scoring keeps running the user's model, and results say which
graph produced them. Quantised operators have no meaningful backward: models with any are refused.
"""

from __future__ import annotations

import hashlib

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions, Session
from faceaudit.engine.scorer import ScoringStats
from faceaudit.errors import InvalidRequest, ModelOutputError, UnsupportedModel
from faceaudit.models.graph import make_batch_dynamic, quantised_operators
from faceaudit.whitebox.backward import check_supported
from faceaudit.whitebox.dataflow import SignalGraph, signal_graph
from faceaudit.whitebox.signals import Signal, is_excitation

SIMILARITY = "faceaudit_similarity"  # the similarity head's output: (B, R) cosines to the references


def refuse_quantised(model: onnx.ModelProto) -> None:
    """UnsupportedModel when the model has quantised operators, which have no meaningful backward."""
    found = quantised_operators(model)
    if found:
        raise UnsupportedModel(
            f"white-box methods need float operators; this model has quantised ones ({', '.join(found)}) whose "
            "integer arithmetic has no meaningful backward. Use a black-box method (occlusion, rise, ...) or the "
            "float model"
        )


def fold_batch_norms(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which each BatchNormalization that exactly follows a Conv is folded into it."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    initializers = {t.name: t for t in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    readers = Counter(name for node in graph.node for name in node.input)
    readers.update(v.name for v in graph.output)
    names = {t.name for t in graph.initializer} | {n for node in graph.node for n in [*node.input, *node.output]}
    replaced: set[str] = set()
    for bn in list(graph.node):
        conv = producers.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if conv is None or not _foldable(conv, bn, initializers, readers):
            continue
        weight, bias = _folded_parameters(conv, bn, initializers)
        weight_name, bias_name = _fresh(names, f"{conv.input[1]}_bn"), _fresh(names, f"{bn.output[0]}_bias")
        graph.initializer.extend(
            [numpy_helper.from_array(weight, weight_name), numpy_helper.from_array(bias, bias_name)])
        replaced.update([*conv.input[1:], *bn.input[1:]])
        del conv.input[1:]
        conv.input.extend([weight_name, bias_name])
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
    # Drop the replaced parameters nothing reads any more (a kernel may be shared with another Conv).
    used = {name for node in graph.node for name in node.input} | {v.name for v in [*graph.input, *graph.output]}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(copy)
    return copy


def _foldable(conv: onnx.NodeProto, bn: onnx.NodeProto, initializers: Mapping[str, onnx.TensorProto],
              readers: Counter[str]) -> bool:
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
        return False
    training = any(a.name == "training_mode" and a.i for a in bn.attribute)
    parameters = [*conv.input[1:], *bn.input[1:5]]
    return (not training and readers[bn.input[0]] == 1 and not any(bn.output[1:])
            and all(name in initializers for name in parameters if name))


def _folded_parameters(conv: onnx.NodeProto, bn: onnx.NodeProto,
                       initializers: Mapping[str, onnx.TensorProto]) -> tuple[np.ndarray, np.ndarray]:
    """W' = W·s, b' = (b − mean)·s + β, s = γ/√(var + ε), in the kernel's dtype."""
    weight = numpy_helper.to_array(initializers[conv.input[1]])
    gamma, beta, mean, var = (numpy_helper.to_array(initializers[name]).astype(np.float64) for name in bn.input[1:5])
    epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + epsilon)
    has_bias = len(conv.input) > 2 and conv.input[2]
    bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float64) if has_bias else 0.0
    folded = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded.astype(weight.dtype), ((bias - mean) * scale + beta).astype(weight.dtype)


def _fresh(names: set[str], base: str) -> str:
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    names.add(name)
    return name


def append_similarity_head(model: onnx.ModelProto, embedding: str, references: np.ndarray, *,
                           output: str = SIMILARITY) -> onnx.ModelProto:
    """A copy with output `output` = cos(embedding, reference_r) for each row r of `references` (R, D).

    Flatten(embedding) → LpNormalization(p=2) → Gemm with the unit-norm references as rows (transB):
    (B, R) cosine similarities, the rows of `references` in order (mate first, then non-mate).
    """
    refs = np.atleast_2d(np.asarray(references, dtype=np.float64))
    norms = np.linalg.norm(refs, axis=1, keepdims=True)
    if refs.ndim != 2 or not np.isfinite(refs).all() or (norms == 0).any():
        raise ValueError("references must be finite, non-zero embeddings, one per row")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    flat, unit, rows = f"{output}_flat", f"{output}_probe", f"{output}_references"
    graph.initializer.append(numpy_helper.from_array((refs / norms).astype(np.float32), rows))
    graph.node.extend([
        helper.make_node("Flatten", [embedding], [flat], name=flat, axis=1),
        helper.make_node("LpNormalization", [flat], [unit], name=unit, axis=1, p=2),
        helper.make_node("Gemm", [unit, rows], [output], name=output, transB=1),
    ])
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, len(refs)]))
    onnx.checker.check_model(copy)
    return copy


def expose_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy whose graph outputs are exactly `names` (any tensors), each typed for the checker.

    Types come from onnx shape inference with data propagation (which resolves shapes computed
    with Shape → Gather → Concat); a tensor whose element type inference leaves open is declared
    float32. The checker requires every main-graph output to carry a shape, so a tensor whose rank
    inference cannot determine is refused (UnsupportedModel) rather than declared with a made-up rank.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        inferred = model
    g = inferred.graph
    known = {v.name: v for v in [*g.input, *g.value_info, *g.output] if v.type.tensor_type.HasField("shape")}
    missing = [name for name in names if name not in known]
    if missing:
        raise UnsupportedModel(
            f"onnx shape inference cannot determine the rank of tensor {missing[0]!r}, which the white-box "
            "methods must expose as an output; re-export the model with static shapes (or run onnx-simplifier)"
        )
    outputs = []
    for name in names:
        value = onnx.ValueInfoProto()
        value.CopyFrom(known[name])
        if not value.type.tensor_type.elem_type:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
        outputs.append(value)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.output[:]
    copy.graph.output.extend(outputs)
    onnx.checker.check_model(copy)
    return copy


@dataclass(frozen=True)
class Activations:
    """One instrumented run: every tensor the backward pass reads, (B, ...) each, the model input included."""

    values: Mapping[str, np.ndarray]
    stats: ScoringStats


@dataclass(frozen=True)
class Instrumented:
    """An instrumented model, its session, and how its score is read.

    `softmax`: classifier scores are softmax(score)_k (the spec's softmax), so gradient seeds carry
    the softmax Jacobian. `similarity`: the score is the similarity head's (B, R) cosines.
    """

    proto: onnx.ModelProto
    graph: SignalGraph
    session: Session
    exposed: tuple[str, ...]
    softmax: bool = False
    similarity: bool = False
    folded_batch_norms: int = 0

    def forward(self, inputs: np.ndarray) -> Activations:
        """Run a batch of model inputs (B, ...) in session-sized chunks; every exposed tensor, checked finite."""
        started = time.perf_counter()
        step = self.session.max_batch
        parts = [self.session.run(inputs[i : i + step]) for i in range(0, len(inputs), step)]
        values: dict[str, np.ndarray] = {self.graph.input_name: inputs}
        for k, name in enumerate(self.exposed):
            values[name] = np.concatenate([part[k] for part in parts])
            if not np.isfinite(values[name]).all():
                raise ModelOutputError(f"tensor {name!r} of the instrumented model is NaN or infinite for this input")
        stats = ScoringStats(images=len(inputs), batches=len(parts), runtime_seconds=time.perf_counter() - started,
                             provider=self.session.provider)
        return Activations(values, stats)

    def seed(self, values: Mapping[str, np.ndarray], signal: Signal, class_index: int | np.ndarray | None = None
             ) -> np.ndarray:
        """The (B, K) seed at the score: what the backward pass differentiates or distributes.

        Classifier, class k: e_k (∂z_k/∂z), or ∂softmax(z)_k/∂z = y_k (e_k − y) for gradients
        under the spec's softmax; the excitation kinds (EBP, eEBP, LRP) always start one-hot (p = 1 at the class).
        Similarity head: gradients of cos_mate − cos_non-mate (1, −1), or of cos_mate alone when
        there is no non-mate; excitation starts one-hot at the mate (1, 0).
        """
        scores = np.asarray(values[self.graph.score], dtype=np.float64).reshape(len(values[self.graph.score]), -1)
        batch, width = scores.shape
        if self.similarity:
            row = np.array([1.0, 0.0 if is_excitation(signal) else -1.0])[:width]
            return np.tile(row, (batch, 1))
        if class_index is None:
            raise ValueError("a classifier seed needs a class index")
        one_hot = np.zeros((batch, width))
        one_hot[np.arange(batch), class_index] = 1.0
        if is_excitation(signal) or not self.softmax:
            return one_hot
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        y = exp / exp.sum(axis=1, keepdims=True)
        return y[np.arange(batch), class_index][:, None] * (one_hot - y)

    def layer(self, name: str, values: Mapping[str, np.ndarray]) -> str:
        """The tensor a map is read at: the model input for "input", the output of the last Conv with
        more than one spatial position for "last_conv" (its BatchNormalization's output when folded),
        else the named tensor, which must lie between the input and the score."""
        nodes, carrying = self.graph.path()
        if name == "input":
            return self.graph.input_name
        if name == "last_conv":
            spatial = [n.output[0] for n in nodes if n.op_type == "Conv" and np.prod(values[n.output[0]].shape[2:]) > 1]
            if not spatial:
                raise InvalidRequest("layer", "the model has no convolution with a spatial output; name a "
                                              f"(N, C, H, W) tensor instead: {_listing(nodes)}")
            return spatial[-1]
        if name not in carrying:
            raise InvalidRequest("layer", f"{name!r} is not a tensor between the input and the score; "
                                          f"tensors there: {_listing(nodes)}")
        return name


def _listing(nodes: list[onnx.NodeProto], limit: int = 12) -> str:
    """Up to `limit` node outputs, the last ones (nearest the score) first."""
    names = [n.output[0] for n in reversed(nodes)]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def instrument_graph(model: onnx.ModelProto, input_name: str, score: str, *, runtime: RuntimeOptions = RuntimeOptions(),
                     fixed_batch: int | None = None, softmax: bool = False, similarity: bool = False) -> Instrumented:
    """Instrument a (rewritten) model for a backward pass from `score` to `input_name`.

    Refuses quantised models and models with an operator on the path that has no rule before
    building any session.
    """
    refuse_quantised(model)
    graph = signal_graph(model, input_name, score)
    nodes, _ = graph.path()
    check_supported(nodes)
    exposed = tuple(graph.activations())
    proto = expose_outputs(model, list(exposed))
    session = Session(proto, input_name, list(exposed), runtime, fixed_batch=fixed_batch)
    return Instrumented(proto, graph, session, exposed, softmax=softmax, similarity=similarity)


CACHED_INSTRUMENTATIONS = 4  # per model: classifiers need one; embeddings one per reference set


def instrument(model: PreparedModel, *, references: np.ndarray | None = None) -> Instrumented:
    """The instrumented form of a prepared model; `references` (R, D) for embedding models (mate, non-mate).

    Applies the prepared model's batch rewrite, folds BatchNormalizations, appends the similarity
    head for embeddings, and runs on the prepared session's provider and threads. Building the
    session costs far more than one backward pass, so the result is kept on the model (the last
    CACHED_INSTRUMENTATIONS reference sets): repeated maps of one model reuse it.
    """
    key = ("instrumented", None if references is None else hashlib.sha256(
        np.ascontiguousarray(references, dtype=np.float64).tobytes()).hexdigest())
    cache = model.derived
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
        return cast(Instrumented, cache[key])
    built = _instrument(model, references)
    cache[key] = built
    stale = [k for k in cache if isinstance(k, tuple) and k[0] == "instrumented"][:-CACHED_INSTRUMENTATIONS]
    for old in stale:
        del cache[old]
    return built


def _instrument(model: PreparedModel, references: np.ndarray | None) -> Instrumented:
    spec = model.spec
    proto = model.loaded.proto
    refuse_quantised(proto)
    if model.batch.mode == "rewritten":
        proto = make_batch_dynamic(proto, spec.require("input_name"))
    rewritten = fold_batch_norms(proto)
    folded = _count(proto, "BatchNormalization") - _count(rewritten, "BatchNormalization")
    embedding = spec.require("kind") == "embedding"
    if embedding:
        if references is None:
            raise ValueError("an embedding model is instrumented with reference embeddings")
        if not np.isfinite(references).all() or (np.linalg.norm(references, axis=1) == 0).any():
            raise ModelOutputError("a reference embedding (mate or non-mate) is all zero or not finite: "
                                   "cosine undefined")
        rewritten = append_similarity_head(rewritten, spec.require("output_name"), references)
    runtime = RuntimeOptions(
        provider="cuda" if model.session.provider == "CUDAExecutionProvider" else "cpu",
        threads=model.session.threads, max_batch=model.session.max_batch,
    )
    instrumented = instrument_graph(
        rewritten, spec.require("input_name"), SIMILARITY if embedding else spec.require("output_name"),
        runtime=runtime, fixed_batch=model.batch.fixed_batch, softmax=not embedding and spec.softmax,
        similarity=embedding,
    )
    return replace(instrumented, folded_batch_norms=folded)


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.node)
