"""What the installed onnx and onnxruntime accept, and the stamp fixes that make a model loadable.

Exporters stamp IR versions and opsets from whatever onnx they were built with. A model stamped
newer than the installed runtime reads is often made only of operators the runtime has; a model
stamped with a pre-7 opset predates onnxruntime's guaranteed support. `make_loadable` fixes what can
be fixed without changing what the model computes and says what it did; the rest is refused with a
message naming the versions on both sides.
"""

from __future__ import annotations

import functools

import onnx
import onnxruntime as ort
from onnx import helper, version_converter

from faceaudit.errors import UnsupportedModel

# onnxruntime guarantees support from this ai.onnx opset on; older models are converted up to it.
MIN_RUNTIME_OPSET = 7
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _probe_model(ir_version: int, opset: int) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    return model.SerializeToString()


def _runtime_accepts(ir_version: int, opset: int) -> bool:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(_probe_model(ir_version, opset), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal means "not accepted"
        return False
    return True


@functools.lru_cache(maxsize=1)
def runtime_max_ir_version() -> int:
    """Highest IR version that both the onnx checker and onnxruntime accept (probed once)."""
    for ir_version in range(onnx.IR_VERSION, 2, -1):
        if _runtime_accepts(ir_version, 13):
            return ir_version
    raise UnsupportedModel(f"onnxruntime {ort.__version__} accepts no IR version this onnx can write")


@functools.lru_cache(maxsize=1)
def runtime_max_opset() -> int:
    """Highest ai.onnx opset that onnxruntime loads (probed once, bounded by what onnx knows)."""
    ir_version = runtime_max_ir_version()
    for opset in range(onnx.defs.onnx_opset_version(), MIN_RUNTIME_OPSET - 1, -1):
        if _runtime_accepts(ir_version, opset):
            return opset
    raise UnsupportedModel(f"onnxruntime {ort.__version__} loads no ai.onnx opset ≥ {MIN_RUNTIME_OPSET}")


def default_opset(model: onnx.ModelProto) -> int | None:
    """The model's ai.onnx opset, or None if it imports none (a graph of custom operators only)."""
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    return max(versions) if versions else None


def make_loadable(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Return a model the installed runtime can load, and notes on each stamp that was changed.

    Lowers an IR version newer than the runtime reads (the checker then verifies that the graph
    uses nothing the lower IR version lacks) and converts opsets below 7 up to 7. Refuses opsets
    newer than the runtime implements: converting down can change semantics.
    """
    notes: list[str] = []
    if not model.opset_import:  # IR < 3 had no opset imports: the operators are opset 1's
        model = _copy(model)
        model.opset_import.add(domain="", version=1)
        model.ir_version = max(model.ir_version, 3)
        notes.append("no opset import (IR < 3): read as ai.onnx opset 1")
    max_ir = runtime_max_ir_version()
    if model.ir_version > max_ir:
        notes.append(
            f"IR version {model.ir_version} lowered to {max_ir}, the newest that onnx {onnx.__version__} "
            f"and onnxruntime {ort.__version__} read"
        )
        model = _copy(model)
        model.ir_version = max_ir

    opset = default_opset(model)
    if opset is not None and opset > runtime_max_opset():
        raise UnsupportedModel(
            f"the model imports ai.onnx opset {opset}, but onnxruntime {ort.__version__} implements "
            f"opsets up to {runtime_max_opset()}: re-export the model with opset ≤ {runtime_max_opset()} "
            "or install a newer onnxruntime"
        )
    if opset is not None and opset < MIN_RUNTIME_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_RUNTIME_OPSET)
        except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeErrors
            raise UnsupportedModel(
                f"the model imports ai.onnx opset {opset}; onnxruntime supports opset ≥ {MIN_RUNTIME_OPSET} "
                f"and converting it up failed: {exc}"
            ) from exc
        notes.append(f"ai.onnx opset {opset} converted up to {MIN_RUNTIME_OPSET} (onnxruntime's oldest supported)")
    return model, notes


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy
