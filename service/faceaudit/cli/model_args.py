"""Model, spec and runtime flags shared by the commands that run a model."""

from __future__ import annotations

import argparse
from typing import Any

from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest
from faceaudit.models import DEFAULT_MAX_MODEL_BYTES, LoadedModel, ModelSpec, load_model, resolve_spec
from faceaudit.models.spec import CHANNEL_ORDERS, KINDS, LAYOUTS, OUTPUT_TYPES


def add_model_arguments(parser: argparse.ArgumentParser, *, positional: bool = True, required: bool = True,
                        model_help: str = "path of the ONNX model") -> None:
    """The model path plus spec and runtime flags (shared by every command that runs a model).
    `required=False` (with positional=False): --model may be omitted (`faceaudit audit` runs the demo)."""
    if positional:
        parser.add_argument("model", help=model_help)
    else:
        parser.add_argument("--model", required=required, help=model_help)
    spec = parser.add_argument_group("model spec (overrides the graph and MODEL.spec.yaml)")
    spec.add_argument("--spec", dest="spec_file", help="spec file (YAML or JSON) to use instead of MODEL.spec.*")
    spec.add_argument("--kind", choices=KINDS)
    spec.add_argument("--input", dest="input_name", help="name of the image input tensor")
    spec.add_argument("--output", dest="output_name", help="name of the output to read")
    spec.add_argument("--size", help="input size as HxW, e.g. 112x112")
    spec.add_argument("--layout", choices=LAYOUTS)
    spec.add_argument("--channels", type=int, choices=[1, 3])
    spec.add_argument("--channel-order", choices=CHANNEL_ORDERS)
    spec.add_argument("--scale", type=float, help="pixel scale applied to [0, 255] values (default 1/255)")
    spec.add_argument("--mean", help="mean subtracted after scaling: one value or three, comma-separated")
    spec.add_argument("--std", help="std divided by after the mean: one value or three, comma-separated")
    spec.add_argument("--output-type", choices=OUTPUT_TYPES)
    spec.add_argument("--softmax", action=argparse.BooleanOptionalAction, default=None, help="score softmax(logits)")
    run = parser.add_argument_group("runtime")
    run.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--threads", type=int, help="intra-op threads (default: the CPUs available)")
    run.add_argument("--max-batch", type=int, default=64)
    run.add_argument("--max-batch-mib", type=float, default=16.0,
                     help="cap on one input batch in MiB; bounds onnxruntime's memory for large inputs (default 16)")
    run.add_argument("--exact", action="store_true", help="one image per runtime call (batch-dependent models)")
    run.add_argument("--max-model-bytes", type=int, default=DEFAULT_MAX_MODEL_BYTES)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def spec_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("kind", "input_name", "output_name", "layout", "channels", "channel_order", "scale",
                     "output_type", "softmax")
    }
    if args.size:
        parts = args.size.lower().split("x")
        if len(parts) != 2:
            raise InvalidRequest("size", f"{args.size!r} is not HxW, e.g. 112x112")
        values["height"], values["width"] = parts
    for name in ("mean", "std"):
        raw = getattr(args, name)
        if raw is not None:
            values[name] = [v.strip() for v in raw.split(",")]
    return {k: v for k, v in values.items() if v is not None}


def open_model(args: argparse.Namespace) -> tuple[LoadedModel, ModelSpec, RuntimeOptions]:
    loaded = load_model(args.model, max_bytes=args.max_model_bytes)
    spec = resolve_spec(loaded, spec_values(args), spec_file=args.spec_file)
    options = RuntimeOptions(provider=args.provider, threads=args.threads, max_batch=args.max_batch,
                             max_batch_bytes=int(args.max_batch_mib * 2**20), exact=args.exact)
    return loaded, spec, options
