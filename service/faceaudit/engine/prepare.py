"""Turn a loaded model and its spec into a runnable model whose batch behaviour is known.

Exports often fix the batch dimension to 1. The input's first dimension is then rewritten to a
symbolic one and the rewrite is *verified by running it*: the rewritten graph must reproduce the
original's output for one image and return one row per image for a batch of distinct images.
A graph that hard-codes its batch size (say in a Reshape to [1, -1]) fails that check and runs
at its fixed size instead; the reason is reported.

The same run measures batch dependence: some models (dynamically quantised ones compute one
quantisation scale over the whole batch tensor) give an image a slightly different output
depending on what else is in the batch. The maximum deviation is reported, and
`RuntimeOptions.exact` runs such models one image at a time.

The probe runs share one time budget (`RuntimeOptions.probe_seconds`): a graph that runs longer,
like a valid Loop of 2^40 iterations, is stopped and refused instead of holding a core for ever.
Only the runs count: building the sessions (graph optimisation, CUDA start-up) may take long for a
large model that then runs fast.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from faceaudit.engine.runtime import RunStop, RunStopped, RuntimeOptions, Session
from faceaudit.errors import InvalidRequest, LimitExceeded, SpecAmbiguous, UnsupportedModel
from faceaudit.models.graph import TensorInfo, graph_inputs, graph_outputs, make_batch_dynamic, select_outputs
from faceaudit.models.loading import LoadedModel
from faceaudit.models.spec import FLAGS, ModelSpec

# Relative deviation (max |Δ| / max |output|) between an image's output alone and inside a batch.
DEPENDENCE_TOLERANCE = 1e-4  # above float reassociation noise of batched GEMMs
BROKEN_BATCH_TOLERANCE = 0.2  # above this the rows are not the images' outputs: batching is broken
PROBE_BATCH = 4
MAX_INPUT_PIXELS = 4096 * 4096  # face models take a few hundred pixels a side


class ProbeTimeout(UnsupportedModel):
    """The probe runs did not end within RuntimeOptions.probe_seconds (FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class BatchBehaviour:
    """How the model handles batches, as measured when it was prepared."""

    mode: str  # "dynamic" | "rewritten" (fixed batch made symbolic) | "fixed"
    fixed_batch: int | None  # the size every run is padded to, for mode "fixed"
    max_deviation: float  # max |output(alone) - output(in batch)| over the probe images
    relative_deviation: float  # max_deviation / max |output|
    reason: str = ""  # why mode is "fixed"

    @property
    def dependent(self) -> bool:
        return self.relative_deviation > DEPENDENCE_TOLERANCE

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode, "fixed_batch": self.fixed_batch, "dependent": self.dependent,
            "max_deviation": self.max_deviation, "relative_deviation": self.relative_deviation,
            "reason": self.reason,
        }


@dataclass
class PreparedModel:
    """A loaded model with its session and measured output shapes: what the scorer runs."""

    loaded: LoadedModel
    spec: ModelSpec
    session: Session
    batch: BatchBehaviour
    output_shapes: dict[str, tuple[int, ...]]  # per output, without the batch dim, as really returned
    output_dtypes: dict[str, str]
    notes: list[str] = field(default_factory=list)
    # Artifacts derived from this model and reused across requests (instrumented white-box
    # sessions), keyed by their builder; bounded by the builders themselves.
    # init=False: dataclasses.replace() gives a changed model a cache of its own.
    derived: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def output_size(self) -> int:
        """Number of values per image in the spec's output (classes, or embedding dim)."""
        return int(np.prod(self.output_shapes[self.spec.require("output_name")]))

    def check_vector_output(self) -> None:
        """Refuse to score an output that is not one float vector per image (K,) or (K, 1, ...)."""
        name = self.spec.require("output_name")
        shape, dtype = self.output_shapes[name], self.output_dtypes[name]
        if not dtype.startswith("float") or not shape or any(d != 1 for d in shape[1:]):
            raise UnsupportedModel(
                f"output {name!r} returns {dtype} of shape [batch, {', '.join(map(str, shape))}] per batch; "
                "scores need one float vector per image (class scores or an embedding): choose another output_name"
            )


def prepare(loaded: LoadedModel, spec: ModelSpec, options: RuntimeOptions = RuntimeOptions()) -> PreparedModel:
    """Build the session for `spec`'s input and output, rewriting a fixed batch dimension if safe.

    With an output chosen, the graph is pruned to it, so onnxruntime computes nothing else.
    """
    model = loaded.proto
    input_name = spec.require("input_name")
    inputs = {t.name: t for t in graph_inputs(model)}
    if input_name not in inputs:
        known = ", ".join(inputs) or "none besides initializers"
        raise InvalidRequest("input_name", f"the model has no input {input_name!r}; its inputs: {known}")
    outputs = [t.name for t in graph_outputs(model)]
    if spec.output_name is not None:
        if spec.output_name not in outputs:
            raise InvalidRequest("output_name", f"the model has no output {spec.output_name!r}; outputs: {', '.join(outputs)}")
        model, outputs = select_outputs(model, [spec.output_name]), [spec.output_name]

    notes: list[str] = []
    probe = _probe_inputs(inputs[input_name], spec)
    runtime = _fit_buffer(options, probe[0].nbytes, notes)
    budget = _ProbeBudget(options.probe_seconds)
    behaviour, session = _batching(model, inputs[input_name], outputs, runtime, probe, budget)
    if options.exact and session.max_batch > 1:
        if behaviour.fixed_batch is None:
            session = session.with_max_batch(1)
            notes.append("exact: one image per runtime call")
        else:
            notes.append(f"exact: not possible, the graph only runs at batch {behaviour.fixed_batch}")
    first = budget.run(session, probe[:1])
    shapes = {name: tuple(int(d) for d in value.shape[1:]) for name, value in zip(outputs, first)}
    dtypes = {name: value.dtype.name for name, value in zip(outputs, first)}
    declared = {t.name: t.dims for t in graph_outputs(model)}
    for name, shape in shapes.items():
        dims = declared.get(name)
        if dims is not None and (len(dims) != len(shape) + 1 or any(
            isinstance(d, int) and d != s for d, s in zip(dims[1:], shape)
        )):
            notes.append(f"output {name!r} is declared {list(dims)} but returns [batch, {', '.join(map(str, shape))}]: using what it returns")
    return PreparedModel(loaded, spec, session, behaviour, shapes, dtypes, notes)


def _fit_buffer(options: RuntimeOptions, image_bytes: int, notes: list[str]) -> RuntimeOptions:
    """Options whose max_batch keeps one input batch within options.max_batch_bytes."""
    fits = max(1, options.max_batch_bytes // image_bytes)
    if fits >= options.max_batch:
        return options
    notes.append(f"max batch lowered from {options.max_batch} to {fits} to keep one input batch under "
                 f"{options.max_batch_bytes / 2**20:g} MiB (max_batch_bytes)")
    return replace(options, max_batch=fits)


def _probe_inputs(tensor: TensorInfo, spec: ModelSpec) -> np.ndarray:
    """Distinct random inputs in model space, shaped by the graph and the spec, which must agree."""
    if tensor.elem_type != "float32":
        raise UnsupportedModel(f"input {tensor.name!r} is {tensor.elem_type}; faceaudit feeds float32 images")
    if tensor.dims is None or len(tensor.dims) != 4:
        raise UnsupportedModel(
            f"input {tensor.name!r} has shape {tensor.dims}; faceaudit feeds images as rank-4 tensors (NCHW or NHWC)"
        )
    layout = spec.require("layout")
    fields = ("channels", "height", "width") if layout == "NCHW" else ("height", "width", "channels")
    dims: list[int] = []
    for field_name, dim in zip(fields, tensor.dims[1:]):
        fixed = dim if isinstance(dim, int) and dim > 0 else None
        given = getattr(spec, field_name)
        if fixed is not None and given is not None and fixed != given:
            raise InvalidRequest(field_name, f"{given} does not match the model's input, fixed at {fixed} ({layout} {list(tensor.dims)})")
        value = given if given is not None else fixed
        if value is None:
            raise SpecAmbiguous(field_name, FLAGS[field_name], f"the input's {field_name} dimension is symbolic")
        dims.append(value)
    height, width = (dims[1], dims[2]) if layout == "NCHW" else (dims[0], dims[1])
    if height * width > MAX_INPUT_PIXELS:
        raise LimitExceeded(f"height, width: a {height}x{width} input is above the limit of {MAX_INPUT_PIXELS:,} pixels")
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, size=(PROBE_BATCH, *dims)).astype(np.float32)


class _ProbeBudget:
    """The probe runs' shared time budget: each run is stopped once the runs together reach it.
    Time between runs (building sessions) does not count."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds
        self.reason = (f"the model's probe runs (forward passes of one to {PROBE_BATCH} images) did not finish "
                       f"within {seconds:g} s (probe_seconds): the graph runs too long or never ends, e.g. a Loop "
                       "without end")

    def run(self, session: Session, batch: np.ndarray) -> list[np.ndarray]:
        """`session.run` stopped when it would take longer than what is left; ProbeTimeout then."""
        if self.left <= 0:  # the runs so far used it all up (the last one ended just in time)
            raise ProbeTimeout(self.reason)
        stop = RunStop()
        timer = threading.Timer(self.left, stop.stop, args=(self.reason,))
        timer.daemon = True
        started = time.monotonic()
        timer.start()
        try:
            return _run_checked(session, batch, stop)
        finally:
            timer.cancel()
            timer.join()  # at once: cancel() wakes it; no thread outlives the run
            self.left -= time.monotonic() - started


def _run_checked(session: Session, batch: np.ndarray, stop: RunStop) -> list[np.ndarray]:
    try:
        return session.run(batch, stop)
    except RunStopped as exc:
        raise ProbeTimeout(str(exc)) from exc
    except UnsupportedModel:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise UnsupportedModel(f"the model fails to run on a probe input of shape {list(batch.shape)}: {_first_line(exc)}") from exc


def _deviation(batched: list[np.ndarray], alone: list[list[np.ndarray]]) -> tuple[float, float]:
    """Max |alone − in batch| and its ratio to max |output|; a value NaN in both runs is skipped."""
    worst = scale = 0.0
    for i, single in enumerate(alone):
        for b, a in zip(batched, single):
            a64, b64 = a.astype(np.float64), b[i : i + 1].astype(np.float64)
            both_nan = np.isnan(a64) & np.isnan(b64)
            diff = np.where(both_nan, 0.0, np.abs(b64 - a64))
            worst = max(worst, float(np.max(diff, initial=0.0)) if not np.isnan(diff).any() else float("inf"))
            scale = max(scale, float(np.max(np.abs(np.nan_to_num(a64)), initial=0.0)))
    return worst, worst / scale if scale > 0 else worst


def _batching(
    model: onnx.ModelProto, tensor: TensorInfo, outputs: list[str], options: RuntimeOptions, probe: np.ndarray,
    budget: _ProbeBudget,
) -> tuple[BatchBehaviour, Session]:
    """Choose how to batch, by comparing each probe image's output alone and inside a batch."""
    declared = tensor.dims[0] if tensor.dims and isinstance(tensor.dims[0], int) else None
    original = Session(model, tensor.name, outputs, options, fixed_batch=declared)
    alone = [budget.run(original, probe[i : i + 1]) for i in range(len(probe))]
    if declared is not None and declared > 1:
        # Runs at its one size only: dependence = an image padded with zeros vs among other images.
        size = min(declared, len(probe))
        worst, relative = _deviation(budget.run(original, probe[:size]), alone[:size])
        reason = f"the input's batch dimension is fixed at {declared}; every call is padded to it"
        return BatchBehaviour("fixed", declared, worst, relative, reason), original
    single = original if declared == 1 else original.with_max_batch(1)
    try:
        if declared == 1:
            mode, batched = "rewritten", Session(make_batch_dynamic(model, tensor.name), tensor.name, outputs, options)
        else:
            mode, batched = "dynamic", original
        worst, relative = _deviation(budget.run(batched, probe), alone)
    except ProbeTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses or fails the batched graph in many ways
        return BatchBehaviour("fixed", 1, 0.0, 0.0, f"the graph hard-codes batch size 1 ({_first_line(exc)})"), single
    if relative > BROKEN_BATCH_TOLERANCE:
        reason = f"an image's output changes by {relative:.0%} inside a batch: the graph mixes images across the batch"
        return BatchBehaviour("fixed", 1, worst, relative, reason), single
    return BatchBehaviour(mode, None, worst, relative), batched


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
