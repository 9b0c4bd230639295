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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from faceaudit.engine.runtime import RuntimeOptions, Session
from faceaudit.errors import InvalidRequest, UnsupportedModel
from faceaudit.models.graph import TensorInfo, graph_inputs, graph_outputs, make_batch_dynamic
from faceaudit.models.loading import LoadedModel
from faceaudit.models.spec import ModelSpec

# Relative deviation (max |Δ| / max |output|) between an image's output alone and inside a batch.
DEPENDENCE_TOLERANCE = 1e-4  # above float reassociation noise of batched GEMMs
BROKEN_BATCH_TOLERANCE = 0.2  # above this the rows are not the images' outputs: batching is broken
PROBE_BATCH = 4


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
    notes: list[str] = field(default_factory=list)

    @property
    def output_size(self) -> int:
        """Number of values per image in the spec's output (classes, or embedding dim)."""
        return int(np.prod(self.output_shapes[self.spec.require("output_name")]))


def prepare(loaded: LoadedModel, spec: ModelSpec, options: RuntimeOptions = RuntimeOptions()) -> PreparedModel:
    """Build the session for `spec`'s input and output, rewriting a fixed batch dimension if safe."""
    model = loaded.proto
    input_name = spec.require("input_name")
    inputs = {t.name: t for t in graph_inputs(model)}
    if input_name not in inputs:
        raise InvalidRequest("input_name", f"the model has no input {input_name!r}; inputs: {', '.join(inputs)}")
    outputs = [t.name for t in graph_outputs(model)]
    if spec.output_name is not None and spec.output_name not in outputs:
        raise InvalidRequest("output_name", f"the model has no output {spec.output_name!r}; outputs: {', '.join(outputs)}")

    probe = _probe_inputs(inputs[input_name], spec)
    behaviour, session = _batching(model, inputs[input_name], outputs, options, probe)
    notes: list[str] = []
    if options.exact and session.max_batch > 1 and behaviour.fixed_batch is None:
        session = session.with_max_batch(1)
        notes.append("exact: one image per runtime call")

    first = _run_checked(session, probe[:1])
    shapes = {name: tuple(int(d) for d in value.shape[1:]) for name, value in zip(outputs, first)}
    declared = {t.name: t.dims for t in graph_outputs(model)}
    for name, shape in shapes.items():
        dims = declared.get(name)
        if dims is not None and len(dims) == len(shape) + 1 and any(
            isinstance(d, int) and d != s for d, s in zip(dims[1:], shape)
        ):
            notes.append(f"output {name!r} is declared {list(dims)} but returns [batch, {', '.join(map(str, shape))}]: using what it returns")
    return PreparedModel(loaded, spec, session, behaviour, shapes, notes)


def _probe_inputs(tensor: TensorInfo, spec: ModelSpec) -> np.ndarray:
    """Distinct random inputs in model space; sizes from the spec where the graph leaves them open."""
    if tensor.dims is None or len(tensor.dims) < 2:
        raise UnsupportedModel(f"input {tensor.name!r} has unknown or rank<2 shape {tensor.dims}; faceaudit needs image inputs")
    if tensor.elem_type != "float32":
        raise UnsupportedModel(f"input {tensor.name!r} is {tensor.elem_type}; faceaudit feeds float32 images")
    dims: list[int] = []
    by_axis = _spec_dims(spec, len(tensor.dims))
    for axis, dim in enumerate(tensor.dims[1:], start=1):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif by_axis.get(axis) is not None:
            dims.append(by_axis[axis])
        else:
            raise InvalidRequest("height" if axis < 3 else "width", f"input dim {axis} of {tensor.name!r} is symbolic; give the input size with --size HxW")
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, size=(PROBE_BATCH, *dims)).astype(np.float32)


def _spec_dims(spec: ModelSpec, rank: int) -> dict[int, int | None]:
    if rank != 4 or spec.layout is None:
        return {}
    if spec.layout == "NCHW":
        return {1: spec.channels, 2: spec.height, 3: spec.width}
    return {1: spec.height, 2: spec.width, 3: spec.channels}


def _run_checked(session: Session, batch: np.ndarray) -> list[np.ndarray]:
    try:
        outputs = session.run(batch)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise UnsupportedModel(f"the model fails to run on a probe input of shape {list(batch.shape)}: {exc}") from exc
    for name, value in zip(session.output_names, outputs):
        if value.ndim == 0 or value.shape[0] != len(batch):
            raise UnsupportedModel(f"output {name!r} has shape {list(value.shape)} for a batch of {len(batch)}")
    return outputs


def _deviation(batched: list[np.ndarray], alone: list[list[np.ndarray]]) -> tuple[float, float]:
    worst = scale = 0.0
    for i, single in enumerate(alone):
        for b, a in zip(batched, single):
            a64 = a.astype(np.float64)
            worst = max(worst, float(np.max(np.abs(b[i : i + 1].astype(np.float64) - a64))))
            scale = max(scale, float(np.max(np.abs(a64))))
    return worst, worst / scale if scale > 0 else worst


def _batching(
    model: onnx.ModelProto, tensor: TensorInfo, outputs: list[str], options: RuntimeOptions, probe: np.ndarray
) -> tuple[BatchBehaviour, Session]:
    """Choose how to batch, by comparing each probe image's output alone and inside a batch."""
    declared = tensor.dims[0] if tensor.dims and isinstance(tensor.dims[0], int) else None
    original = Session(model, tensor.name, outputs, options, fixed_batch=declared)
    if declared is not None and declared > 1:
        reason = f"the input's batch dimension is fixed at {declared}; every call is padded to it"
        return BatchBehaviour("fixed", declared, 0.0, 0.0, reason), original
    alone = [_run_checked(original, probe[i : i + 1]) for i in range(len(probe))]
    single = original if declared == 1 else original.with_max_batch(1)
    try:
        if declared == 1:
            mode, batched = "rewritten", Session(make_batch_dynamic(model, tensor.name), tensor.name, outputs, options)
        else:
            mode, batched = "dynamic", original
        worst, relative = _deviation(_run_checked(batched, probe), alone)
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses or fails the batched graph in many ways
        return BatchBehaviour("fixed", 1, 0.0, 0.0, f"the graph hard-codes batch size 1 ({_first_line(exc)})"), single
    if relative > BROKEN_BATCH_TOLERANCE:
        reason = f"an image's output changes by {relative:.0%} inside a batch: the graph mixes images across the batch"
        return BatchBehaviour("fixed", 1, worst, relative, reason), single
    return BatchBehaviour(mode, None, worst, relative), batched


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
