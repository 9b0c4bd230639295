"""What `faceaudit models inspect` reports about a model (and the service's model info).

Inspection never fails for want of a spec: fields the graph leaves open are listed as unknown with
the flag that sets them, and a batch probe that needs them is reported as not run.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any

import onnxruntime as ort

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import FaceAuditError
from faceaudit.models.graph import graph_inputs, graph_outputs, operator_counts, quantised_operators
from faceaudit.models.loading import LoadedModel
from faceaudit.models.spec import FLAGS, ModelSpec
from faceaudit.whitebox import unsupported_operators


@dataclass
class ModelInfo:
    loaded: LoadedModel
    spec: ModelSpec
    prepared: PreparedModel | None
    probe_error: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        proto = self.loaded.proto
        quantised = quantised_operators(proto)
        without_rule = unsupported_operators(proto)
        return {
            "source": self.loaded.source,
            "sha256": self.loaded.sha256,
            "size_bytes": self.loaded.size_bytes,
            "ir_version": proto.ir_version,
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
            "load_notes": self.loaded.notes,
            "inputs": [t.to_dict() for t in graph_inputs(proto)],
            "outputs": [
                {**t.to_dict(), "returned_shape": self._returned_shape(t.name)} for t in graph_outputs(proto)
            ],
            "spec": self.spec.to_dict(),
            "unknown_fields": self.spec.unknown_fields(),
            "assumed_fields": self.spec.assumed_fields(),
            "operators": operator_counts(proto),
            "quantised_operators": quantised,
            "operators_without_white_box_rule": without_rule,
            "white_box": (
                "unavailable: quantised operators have no meaningful backward; use black-box methods" if quantised
                else "unavailable: operators without a white-box rule; use black-box methods" if without_rule
                else "available"
            ),
            "batch": self.prepared.batch.to_dict() if self.prepared else {"mode": "unknown", "reason": self.probe_error},
            "runtime": {
                "onnxruntime": ort.__version__,
                "available_providers": ort.get_available_providers(),
                "provider": self.prepared.session.provider if self.prepared else None,
                "threads": self.prepared.session.threads if self.prepared else None,
                "max_batch": self.prepared.session.max_batch if self.prepared else None,
            },
            "notes": self.prepared.notes if self.prepared else [],
            "warnings": self.warnings,
        }

    def _returned_shape(self, name: str) -> list[Any] | None:
        if self.prepared is None or name not in self.prepared.output_shapes:
            return None
        return ["batch", *self.prepared.output_shapes[name]]


def inspect_model(loaded: LoadedModel, spec: ModelSpec, options: RuntimeOptions = RuntimeOptions()) -> ModelInfo:
    """Describe the model; probe its batch behaviour and real output shapes if the spec allows."""
    try:
        prepared: PreparedModel | None = prepare(loaded, spec, options)
        error = ""
    except FaceAuditError as exc:
        prepared, error = None, f"not probed: {exc}"
    return ModelInfo(loaded, spec, prepared, error, installation_warnings())


def installation_warnings() -> list[str]:
    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(dist)
            installed.append(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(installed) == 2:
        return ["both onnxruntime and onnxruntime-gpu are installed; they overwrite each other's files: uninstall one"]
    return []


def render_text(info: dict[str, Any]) -> str:
    """The human-readable report of `to_dict()`."""
    lines = [
        f"model      {info['source']}",
        f"sha256     {info['sha256']}",
        f"size       {info['size_bytes']:,} bytes",
        f"format     IR {info['ir_version']}, opsets "
        + ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
        + (f", by {info['producer']}" if info["producer"] else ""),
    ]
    lines += [f"note       {n}" for n in info["load_notes"]]
    for t in info["inputs"]:
        lines.append(f"input      {t['name']}  {_shape(t['shape'])}  {t['type']}")
    for t in info["outputs"]:
        returned = f"  returns {_shape(t['returned_shape'])}" if t["returned_shape"] else ""
        lines.append(f"output     {t['name']}  declared {_shape(t['shape'])}{returned}  {t['type']}")
    lines.append("spec")
    for name, entry in info["spec"].items():
        value = "?" if entry["value"] is None else _value(entry["value"])
        hint = f"   set with {FLAGS[name]}" if entry["source"] == "unknown" and name in FLAGS else ""
        lines.append(f"  {name:<14}{str(value):<24}{entry['source']}{hint}")
    batch = info["batch"]
    if batch["mode"] == "unknown":
        lines.append(f"batch      unknown ({batch['reason']})")
    else:
        fixed = f" at {batch['fixed_batch']}" if batch["fixed_batch"] else ""
        lines.append(
            f"batch      {batch['mode']}{fixed}; batch-dependent: {'yes' if batch['dependent'] else 'no'} "
            f"(max deviation {batch['max_deviation']:.3g}, relative {batch['relative_deviation']:.3g})"
        )
        if batch["reason"]:
            lines.append(f"           {batch['reason']}")
    runtime = info["runtime"]
    lines.append(
        f"runtime    onnxruntime {runtime['onnxruntime']}, provider {runtime['provider'] or '-'}, "
        f"threads {runtime['threads'] or '-'}, max batch {runtime['max_batch'] or '-'}"
    )
    lines.append("operators  " + ", ".join(f"{op}×{n}" for op, n in info["operators"].items()))
    missing = info["quantised_operators"] or info["operators_without_white_box_rule"]
    lines.append(f"white-box  {info['white_box']}" + (f" ({', '.join(missing)})" if missing else ""))
    lines += [f"note       {n}" for n in info["notes"]]
    lines += [f"warning    {w}" for w in info["warnings"]]
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(_value(v) for v in value)
    return str(value)


def _shape(dims: list[Any] | None) -> str:
    return "[?]" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"

