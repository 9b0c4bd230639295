"""The backward pass compiled to ONNX: forward and backward in one onnxruntime run, in float32.

For a SignalGraph path (source → score) and a signal kind, `compile_backward` appends to the
instrumented model one small ONNX subgraph per node, walking the path in reverse exactly as
backward.py does, and returns a model with two inputs (the model input and the seed at the score;
gweEBP's gain seed a third) and three outputs (the score, the signal at the source and the source's
activations). The rules, one per operator, are in compiled_rules.py. One image may carry several
seeds: its forward pass is shared (CompiledBackward.run).

Supported signals: gradient, guided, deconv, excitation, extended (eEBP, with the target unit read
as a winner, and gweEBP's gradient-weighted responses). Anything else (another signal, an
operator or attribute combination without a compiled rule, opset < 13, non-float32 tensors)
raises NotCompilable; `run_backward` then runs the numpy engine (backward.py), the reference,
and says which engine produced the signal. It never returns a compiled result it cannot vouch
for: a non-finite compiled signal is recomputed by the numpy engine too.

May touch: whitebox (dataflow, rules' geometry helpers, backward and gradient_weighting as the fallback), engine runtime
options and ScoringStats; nothing outside the instrumented model it is given.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RunStopped, available_cpus, run_stoppable
from faceaudit.engine.scorer import ScoringStats
from faceaudit.errors import FaceAuditError
from faceaudit.whitebox.backward import backward, operator_label
from faceaudit.whitebox.compiled_rules import (
    COMPILED_RULES, MULTI_OUTPUT_RULES, Emitter, Node, NotCompilable, nonnegative_tensors,
)
from faceaudit.whitebox.dataflow import SignalGraph
from faceaudit.whitebox.gradient_weighting import gradient_weighted
from faceaudit.whitebox.instrument import Instrumented
from faceaudit.whitebox.rules import NodeContext
from faceaudit.whitebox.signals import Signal, is_excitation

COMPILED_SIGNALS: tuple[Signal, ...] = ("gradient", "guided", "deconv", "excitation", "extended")
SEED = "faceaudit_seed"  # (B, K) at the score: the seed, or the one-hot the softmax seed is built from
GAIN_SEED = "faceaudit_gain_seed"  # (B, K) at the score: gweEBP's ∂G/∂score, whose gradient weighs the responses
CACHED_BACKWARDS = 8  # per model: (instrumentation, signal, source) combinations kept


def compile_backward(wb: Instrumented, values: Mapping[str, np.ndarray], signal: Signal, source: str, *,
                     softmax_seed: bool, one_hot_seed: bool = False, graph: SignalGraph | None = None,
                     winners: tuple[str, ...] = (), gain_weighted: bool = False) -> onnx.ModelProto:
    """The instrumented model plus the backward pass from its score to `source`, as one ONNX model.

    Inputs: the model input and SEED (B, K) (and GAIN_SEED (B, K) with `gain_weighted`). Outputs: the
    score, the signal at `source` and the activations at `source` (Grad-CAM weighs them by the signal).
    `values` holds one instrumented run (only the shapes and the dtypes are read: shapes other than
    the batch axis are fixed by the model). With `softmax_seed` SEED is the one-hot e_k and the graph
    builds the gradient seed of softmax(z)_k itself, y_k (e_k − y) (Instrumented.seed). With
    `one_hot_seed` every row of SEED has at most one non-zero (CompiledBackward.run checks it), which
    lets the top layer read one row of its weights (compiled_rules._dense_one_hot). `graph` replaces wb.graph: the
    same nodes with another score (a seed at an intermediate tensor, SEED then has its shape) or other
    constants (cEBP's dual unit), which the rules read instead of the model's initializers. Extended
    signal only: `winners` are tensors whose response is read as |y|, pos-neurons whatever their sign
    (eEBP's target unit, methods.cebp.winner_tensors); `gain_weighted` first walks the gradient from
    GAIN_SEED and replaces every response on the path (the source included, the model input and the
    score excepted) by its gradient-weighted ã (gweEBP, whitebox.gradient_weighting), winners last.
    """
    if signal not in COMPILED_SIGNALS:
        raise NotCompilable(f"signal {signal}")
    own = graph is None or graph.constants is wb.graph.constants
    graph = graph or wb.graph
    if graph.opset < 13:
        raise NotCompilable("opset below 13")
    nodes, carrying = graph.path(source)
    if source not in carrying:
        raise NotCompilable("the score does not depend on the source")
    if any(name in values and values[name].dtype != np.float32 for name in carrying):
        raise NotCompilable("a tensor on the path is not float32")
    model = onnx.ModelProto()
    model.CopyFrom(wb.proto)
    taken = {t.name for t in model.graph.initializer}
    taken.update(name for node in model.graph.node for name in [*node.input, *node.output])
    em = Emitter(taken, graph.opset)
    em.share_weights = own
    shapes = {name: tuple(np.shape(value)) for name, value in {**values, **graph.constants}.items()}
    seed = em.reshape_like(_seed(em, graph.score, softmax_seed), shapes[graph.score])
    if one_hot_seed and not softmax_seed and len(shapes[graph.score]) == 2:
        em.one_hot.add(seed)
    readers = Counter(name for node in model.graph.node for name in node.input)
    em.relu_before = {node.output[0] for node in model.graph.node
                      if node.op_type == "Relu" and readers[node.output[0]] == 1 and node.output[0] != source
                      and node.input[0] in carrying
                      and any(r.op_type == "MaxPool" and r.input[0] == node.output[0] for r in model.graph.node)}
    em.nonnegative = nonnegative_tensors(model.graph.node, graph.constants)
    walk = _Walk(em, model, nodes, carrying, values, graph, shapes)
    if gain_weighted:
        if signal != "extended":
            raise NotCompilable(f"gradient-weighted {signal}")
        # From the model input, as gradient_weighting does: a tensor on the path (a residual skip around
        # `source`) can have gradient flowing through nodes below `source` too.
        below = _Walk(em, model, *graph.path(graph.input_name), values, graph, shapes)
        gradients = below(em.reshape_like(GAIN_SEED, shapes[graph.score]), "gradient")
        em.responses = {name: _weigh(em, name, g) for name, g in gradients.items()
                        if name not in (graph.input_name, graph.score)}
    if signal == "extended":
        em.responses.update({name: em.op("Abs", [name]) for name in winners})
    result = em.op("Identity", [walk(seed, signal)[source]])
    at_source = em.op("Identity", [source])
    model.graph.node.extend(em.nodes)
    model.graph.initializer.extend(em.initializers)
    for name in [SEED, GAIN_SEED] if gain_weighted else [SEED]:
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                               [None] * len(shapes[graph.score])))
    del model.graph.output[:]
    model.graph.output.extend([
        helper.make_tensor_value_info(graph.score, TensorProto.FLOAT, [None] * len(shapes[graph.score])),
        helper.make_tensor_value_info(result, TensorProto.FLOAT, [None] * len(shapes[source])),
        helper.make_tensor_value_info(at_source, TensorProto.FLOAT, [None] * len(shapes[source])),
    ])
    return model


@dataclass
class _Walk:
    """Emits one backward pass over the path: walk(seed, signal) → the accumulated signal of every tensor on it."""

    em: Emitter
    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    carrying: set[str]
    values: Mapping[str, np.ndarray]
    graph: SignalGraph
    shapes: dict[str, tuple[int, ...]]

    def __call__(self, seed: str, signal: Signal) -> dict[str, str]:
        em, graph = self.em, self.graph
        by_output = {node.output[0]: node for node in self.model.graph.node if node.output}
        arriving: dict[str, list[str]] = {graph.score: [seed]}
        reached: dict[str, str] = {}
        for original in reversed(self.nodes):
            proto = by_output[original.output[0]]  # the node in the model being extended
            label = operator_label(proto)
            node = Node(proto, NodeContext(proto, self.values, graph.constants, graph.opset), self.shapes)
            outputs = [name for name in proto.output if name]
            try:
                if label in MULTI_OUTPUT_RULES:
                    if not all(name in arriving for name in outputs):
                        raise NotCompilable(f"{proto.op_type} with an output that carries no signal")
                    grads = [_accumulate(em, arriving.pop(name)) for name in outputs]
                    reached.update(zip(outputs, grads))
                    sent = MULTI_OUTPUT_RULES[label](em, node, grads, signal)
                else:
                    rule = COMPILED_RULES.get(label)
                    if rule is None:
                        raise NotCompilable(f"operator {label}")
                    if any(name in arriving for name in outputs[1:]):
                        raise NotCompilable(f"{proto.op_type} with a used second output")
                    if outputs[0] not in arriving:
                        raise NotCompilable(f"{proto.op_type} whose first output carries no signal")
                    grad = reached[outputs[0]] = _accumulate(em, arriving.pop(outputs[0]))
                    sent = rule(em, node, grad, signal)
            except FaceAuditError as exc:  # the numpy engine reports it (or computes what this rule cannot)
                raise NotCompilable(str(exc)) from exc
            for index, name in enumerate(proto.input):
                if name in self.carrying:
                    if index not in sent:
                        raise NotCompilable(f"{proto.op_type} passes no signal to input {index}")
                    arriving.setdefault(name, []).append(sent[index])
        reached.update({name: _accumulate(em, parts) for name, parts in arriving.items()})  # the source
        return reached


def _weigh(em: Emitter, response: str, gradient: str) -> str:
    """ã = â [g]⁺ where â ≥ 0, â [−g]⁺ where â < 0 (whitebox.gradient_weighting.weigh)."""
    positive = em.op("Relu", [response])
    kept = em.op("Mul", [positive, em.op("Relu", [gradient])])
    return em.op("Add", [kept, em.op("Mul", [em.op("Sub", [response, positive]),
                                            em.op("Relu", [em.op("Neg", [gradient])])])])


def _seed(em: Emitter, score: str, softmax_seed: bool) -> str:
    if not softmax_seed:
        return SEED
    y = em.op("Softmax", [em.op("Flatten", [score], axis=1)], axis=1)
    y_k = em.reduce_sum(em.op("Mul", [y, SEED]), [1], keepdims=True)
    return em.op("Mul", [y_k, em.op("Sub", [SEED, y])])


def _accumulate(em: Emitter, parts: list[str]) -> str:
    """A tensor read by several nodes sums what each sends back (backward.py)."""
    return parts[0] if len(parts) == 1 else em.op("Sum", parts)


class CompiledRun(NamedTuple):
    score: np.ndarray
    signal: np.ndarray  # at the source
    activations: np.ndarray  # the source tensor's value
    stats: ScoringStats


class CompiledBackward:
    """An onnxruntime session of a compiled model: (inputs, seed) → (score, signal), batch by batch."""

    def __init__(self, proto: onnx.ModelProto, wb: Instrumented, signal: Signal, softmax_seed: bool,
                 one_hot_seed: bool = False) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = wb.session.threads or available_cpus()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 4
        providers = [wb.session.provider] + (["CPUExecutionProvider"] if wb.session.provider != "CPUExecutionProvider"
                                             else [])
        try:
            self._session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped errors; the numpy engine still works
            raise NotCompilable(f"onnxruntime refused the compiled graph: {exc}") from exc
        self._outputs = [v.name for v in proto.graph.output]
        self.wb, self.signal, self.softmax_seed, self.one_hot_seed = wb, signal, softmax_seed, one_hot_seed
        self.gain_weighted = any(value.name == GAIN_SEED for value in proto.graph.input)

    def run(self, inputs: np.ndarray, seed: np.ndarray, gain_seed: np.ndarray | None = None) -> CompiledRun:
        """Score (B, ...), signal at the source (B, ...) and activations there (B, ...) for model inputs
        (B, ...) and seeds (B, K); a gradient-weighted graph also takes `gain_seed` (B, K), one per image.

        One image with several seeds (inputs (1, ...), seeds (S, K), S > 1) shares the image's forward
        pass: the backward nodes broadcast its activations (batch 1) against S signals, so S maps cost
        one forward pass (and, for excitation, one W⁺x per layer) plus S backward passes. The score is
        then (1, ...), the activations (1, ...) and the signal (S, ...). A model that only runs at a fixed batch size gets one run
        per seed instead."""
        if self.one_hot_seed and (np.count_nonzero(seed, axis=1) > 1).any():
            raise ValueError("this compiled backward was built for seeds with one non-zero per row")
        if self.gain_weighted != (gain_seed is not None):
            raise ValueError("a gain seed goes with a gradient-weighted compiled backward, and only with one")
        started = time.perf_counter()
        session = self.wb.session
        shared = len(inputs) == 1 and len(seed) > 1
        step = 1 if shared and session.fixed_batch else session.max_batch
        scores, signals, activations, batches = [], [], [], 0
        for i in range(0, len(seed) if shared else len(inputs), step):
            chunk = inputs if shared else inputs[i : i + step]
            rows = seed[i : i + step].astype(np.float32)
            n, size = len(rows), session.padded_size(len(chunk)) if session.fixed_batch else len(chunk)
            if len(chunk) < size:  # a model that only runs at its fixed batch size
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
                rows = np.concatenate([rows, np.zeros((size - n, *rows.shape[1:]), rows.dtype)])
            feeds = {self.wb.graph.input_name: chunk, SEED: rows}
            if gain_seed is not None:
                gain = (gain_seed if shared else gain_seed[i : i + step]).astype(np.float32)
                feeds[GAIN_SEED] = np.concatenate([gain, np.zeros((len(chunk) - len(gain), *gain.shape[1:]),
                                                                  np.float32)])
            score, signal, at_source = run_stoppable(self._session, self._outputs, feeds)  # ends with the call's work
            scores.append(score[:1] if shared else score[:n])
            activations.append(at_source[:1] if shared else at_source[:n])
            signals.append(signal[:n])
            batches += 1
        images = batches if shared and session.fixed_batch else len(inputs)  # there: one forward pass per seed
        stats = ScoringStats(images=images, batches=batches, runtime_seconds=time.perf_counter() - started,
                             provider=session.provider)
        if shared:
            return CompiledRun(scores[0], np.concatenate(signals), activations[0], stats)
        return CompiledRun(np.concatenate(scores), np.concatenate(signals), np.concatenate(activations), stats)


@dataclass(frozen=True)
class BackwardRun:
    """The signal at the source (float64), the score (B, ...) and which engine computed them."""

    signal: np.ndarray
    score: np.ndarray
    stats: ScoringStats
    engine: str  # "onnxruntime" or "numpy"
    fallback: str = ""  # why the numpy engine ran, when it did
    activations: np.ndarray | None = None  # the source tensor's value (float64)


SeedKind = Literal["dense", "one_hot", "softmax"]


def run_backward(model: PreparedModel, wb: Instrumented, inputs: np.ndarray, signal: Signal,
                 class_index: int | np.ndarray | None, source: str | None = None, winners: tuple[str, ...] = (),
                 gain_seed: np.ndarray | None = None) -> BackwardRun:
    """Forward and backward for model inputs (B, ...) from Instrumented.seed at the score: compiled when
    the path compiles, else the numpy engine. Gradients of softmax(z)_k get their seed built in the graph.
    One image (B = 1) with an array of S > 1 classes gives S signals from one shared forward pass.
    `winners` and `gain_seed`: as seeded_backward's (eEBP's target unit, gweEBP's weighting)."""
    softmax_seed = wb.softmax and not is_excitation(signal) and not wb.similarity
    classes = np.atleast_1d(class_index) if class_index is not None else None
    shared = len(inputs) == 1 and classes is not None and len(classes) > 1
    rows = len(classes) if shared else len(inputs)
    scores = {wb.graph.score: np.zeros((rows, score_width(model, wb, inputs)))}
    if softmax_seed:  # e_k here; y_k (e_k − y) in the graph (the numpy engine reads y from its run)
        seed, kind = wb.seed(scores, "excitation", class_index), "softmax"
    else:  # one-hot at a class, or (1, 0) at the similarity head for excitation; (1, −1) for its gradient
        seed = wb.seed(scores, signal, class_index)
        kind = "one_hot" if (np.count_nonzero(seed, axis=1) <= 1).all() else "dense"

    def numpy_seed(values: Mapping[str, np.ndarray]) -> np.ndarray:
        if shared:
            return np.concatenate([wb.seed(values, signal, int(k)) for k in classes])
        return wb.seed(values, signal, class_index)

    return seeded_backward(model, wb, inputs, seed, signal, source=source, kind=kind, numpy_seed=numpy_seed,
                           winners=winners, gain_seed=gain_seed)


def seeded_backward(model: PreparedModel, wb: Instrumented, inputs: np.ndarray, seed: np.ndarray, signal: Signal,
                    *, source: str | None = None, graph: SignalGraph | None = None, variant: str = "",
                    kind: SeedKind | None = None, winners: tuple[str, ...] = (), gain_seed: np.ndarray | None = None,
                    numpy_seed: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None) -> BackwardRun:
    """Forward and backward from an explicit `seed` (B, ...) at graph.score (default wb.graph's); one
    image (inputs (1, ...)) with S seeds (S, ...) shares its forward pass (CompiledBackward.run).

    The compiled model is built on the first call for (instrumentation, signal, source, score,
    `variant`, seed kind) from the shapes of one instrumented run and kept in model.derived; a path
    that does not compile is remembered too, with the reason, which the result carries. `variant`
    names what distinguishes `graph`'s constants from the model's (cEBP's "dual"): graphs with equal
    names must be equal. `kind` defaults to "one_hot" when every row of a 2-D seed has at most one
    non-zero, else "dense"; `numpy_seed` gives the fallback its seed from its own run (softmax seeds).
    `winners`: for the extended signal, tensors read as pos-neurons; `gain_seed` (B, K): responses weighted
    by the gradient from it (gweEBP; compile_backward's gain_weighted).
    """
    graph = graph or wb.graph
    source = source or graph.input_name
    if kind is None:
        kind = "one_hot" if seed.ndim == 2 and (np.count_nonzero(seed, axis=1) <= 1).all() else "dense"
    weighted = gain_seed is not None
    key = ("compiled_backward", id(wb), signal, source, graph.score, variant, kind, winners, weighted)
    entry = model.derived.get(key)
    if entry is None or entry[0] is not wb:
        acts = wb.forward(inputs)
        try:
            proto = compile_backward(wb, acts.values, signal, source, softmax_seed=kind == "softmax",
                                     one_hot_seed=kind == "one_hot", graph=graph, winners=winners,
                                     gain_weighted=weighted)
            entry = (wb, CompiledBackward(proto, wb, signal, kind == "softmax", kind == "one_hot"), "")
        except NotCompilable as exc:
            entry = (wb, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a compiler bug: the reference engine answers, and the map says why
            entry = (wb, None, f"internal error of the compiler: {exc!r}")
        _remember(model, key, entry)
        if entry[1] is None:
            return _numpy_run(wb, graph, acts, seed, numpy_seed, signal, source, entry[2], winners, gain_seed)
    else:
        model.derived[key] = model.derived.pop(key)  # most recently used last
    compiled, reason = entry[1], entry[2]
    spent = 0  # forward passes of a compiled run whose result is not used
    if compiled is not None:
        try:
            score, at_source, activations, stats = compiled.run(inputs, seed, gain_seed)
        except (ValueError, RunStopped):  # the caller's seeds do not fit this graph; the work was stopped
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped errors; the reference engine answers
            reason = f"onnxruntime failed running the compiled graph: {exc}"
        else:
            if np.isfinite(at_source).all() and np.isfinite(score).all():
                return BackwardRun(at_source.astype(np.float64), score, stats, "onnxruntime",
                                   activations=activations.astype(np.float64))
            reason, spent = "the compiled signal was not finite", stats.images
    found = _numpy_run(wb, graph, wb.forward(inputs), seed, numpy_seed, signal, source, reason, winners, gain_seed)
    if spent:
        found = dataclasses.replace(found, stats=dataclasses.replace(found.stats, images=found.stats.images + spent))
    return found


def score_width(model: PreparedModel, wb: Instrumented, inputs: np.ndarray) -> int:
    """Columns K of the score (B, K), read from one instrumented run of `inputs` once per instrumentation."""
    key = ("score_width", id(wb))
    entry = model.derived.get(key)
    if entry is None or entry[0] is not wb:
        score = wb.forward(inputs[:1]).values[wb.graph.score]
        entry = (wb, int(np.prod(np.shape(score)[1:])))
        _remember(model, key, entry)
    return entry[1]


def _remember(model: PreparedModel, key: tuple[Any, ...], entry: tuple[Any, ...]) -> None:
    model.derived[key] = entry
    stale = [k for k in model.derived if isinstance(k, tuple) and k[0] == key[0]][:-CACHED_BACKWARDS]
    for old in stale:
        del model.derived[old]


def resolve_layer(model: PreparedModel, wb: Instrumented, name: str, inputs: np.ndarray) -> str:
    """Instrumented.layer, kept in model.derived per instrumentation and name: "last_conv" reads the
    activations' shapes (one run of `inputs`, once), and every name costs a walk of the graph."""
    key = ("resolved_layer", id(wb), name)
    entry = model.derived.get(key)
    if entry is None or entry[0] is not wb:
        values = wb.forward(inputs).values if name == "last_conv" else {}
        entry = (wb, wb.layer(name, values))
        _remember(model, key, entry)
    return entry[1]


def engine_extra(*runs: BackwardRun) -> dict[str, str]:
    """What a map's extra says about the engine of its backward passes: "onnxruntime", "numpy" (and why
    a path did not compile), or both when its passes differ ("numpy, onnxruntime")."""
    reasons = sorted({run.fallback for run in runs if run.fallback})
    return {"engine": ", ".join(sorted({run.engine for run in runs}))} | (
        {"engine_fallback": "; ".join(reasons)} if reasons else {})


def _numpy_run(wb: Instrumented, graph: SignalGraph, acts: Any, seed: np.ndarray,
               numpy_seed: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None, signal: Signal, source: str,
               reason: str, winners: tuple[str, ...] = (), gain_seed: np.ndarray | None = None) -> BackwardRun:
    values = acts.values
    seed = numpy_seed(values) if numpy_seed is not None else seed
    weighted = gradient_weighted(graph, values, gain_seed) if gain_seed is not None else {}
    responses = {**weighted, **{name: np.abs(np.asarray(values[name], dtype=np.float64)) for name in winners}} or None

    def walk(rows: np.ndarray) -> np.ndarray:
        return backward(graph, values, rows, signal, source=source, responses=responses)[source]

    if len(seed) == len(values[graph.score]):
        at_source = walk(seed)
    else:  # one image, several seeds (CompiledBackward.run): the same activations for each
        at_source = np.concatenate([walk(row[None]) for row in seed])
    return BackwardRun(at_source, np.asarray(values[graph.score]), acts.stats, "numpy", reason,
                       activations=np.asarray(values[source], dtype=np.float64))
