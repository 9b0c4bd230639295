"""`faceaudit` command line.

    faceaudit models inspect MODEL.onnx [spec flags] [--json]
    faceaudit models score MODEL.onnx --image FACE.png [--image ...] (--target K | --reference MATE.png ...)

Spec flags override what a spec file next to the model (MODEL.spec.yaml|yml|json) says, which
overrides what the graph reveals. Errors print one line naming the field and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from faceaudit.engine.prepare import prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer, embed
from faceaudit.errors import FaceAuditError, InvalidRequest
from faceaudit.images.io import load_image
from faceaudit.model_info import inspect_model, render_text
from faceaudit.models import DEFAULT_MAX_MODEL_BYTES, load_model, resolve_spec


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of the ONNX model")
    spec = parser.add_argument_group("model spec (overrides the graph and MODEL.spec.yaml)")
    spec.add_argument("--spec", dest="spec_file", help="spec file (YAML or JSON) to use instead of MODEL.spec.*")
    spec.add_argument("--kind", choices=["classifier", "embedding"])
    spec.add_argument("--input", dest="input_name", help="name of the image input tensor")
    spec.add_argument("--output", dest="output_name", help="name of the output to read")
    spec.add_argument("--size", help="input size as HxW, e.g. 112x112")
    spec.add_argument("--layout", choices=["NCHW", "NHWC"])
    spec.add_argument("--channels", type=int, choices=[1, 3])
    spec.add_argument("--channel-order", choices=["RGB", "BGR"])
    spec.add_argument("--scale", type=float, help="pixel scale applied to [0, 255] values (default 1/255)")
    spec.add_argument("--mean", help="mean subtracted after scaling: one value or three, comma-separated")
    spec.add_argument("--std", help="std divided by after the mean: one value or three, comma-separated")
    spec.add_argument("--output-type", choices=["logits", "probabilities"])
    spec.add_argument("--softmax", action="store_true", default=None, help="score softmax(logits)")
    run = parser.add_argument_group("runtime")
    run.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--threads", type=int, help="intra-op threads (default: the CPUs available)")
    run.add_argument("--max-batch", type=int, default=64)
    run.add_argument("--exact", action="store_true", help="one image per runtime call (batch-dependent models)")
    run.add_argument("--max-model-bytes", type=int, default=DEFAULT_MAX_MODEL_BYTES)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _spec_values(args: argparse.Namespace) -> dict[str, Any]:
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


def _open(args: argparse.Namespace) -> tuple[Any, Any, RuntimeOptions]:
    loaded = load_model(args.model, max_bytes=args.max_model_bytes)
    spec = resolve_spec(loaded, _spec_values(args), spec_file=args.spec_file)
    options = RuntimeOptions(provider=args.provider, threads=args.threads, max_batch=args.max_batch, exact=args.exact)
    return loaded, spec, options


def cmd_inspect(args: argparse.Namespace) -> int:
    loaded, spec, options = _open(args)
    info = inspect_model(loaded, spec, options).to_dict()
    print(json.dumps(info, indent=2) if args.json else render_text(info))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    loaded, spec, options = _open(args)
    model = prepare(loaded, spec, options)
    images = np.stack([load_image(p, spec, field=f"image[{i}]") for i, p in enumerate(args.image)])
    if spec.require("kind") == "classifier":
        if args.target is None:
            raise InvalidRequest("target", "a classifier needs --target CLASS_INDEX")
        target: ClassTarget | EmbeddingTarget = ClassTarget(args.target)
    else:
        if not args.reference:
            raise InvalidRequest("reference", "an embedding model needs --reference IMAGE (mate, then non-mate)")
        refs = np.stack([load_image(p, spec, field=f"reference[{i}]") for i, p in enumerate(args.reference)])
        target = EmbeddingTarget(embed(model, refs))
    scorer = Scorer(model, target)
    scores = scorer.score([images])
    result = {
        "model": loaded.sha256,
        "provider": scorer.stats.provider,
        "assumed_fields": spec.assumed_fields(),
        "scores": [{"image": p, "score": np.asarray(s).tolist()} for p, s in zip(args.image, scores)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["scores"]:
            print(f"{row['score']}\t{row['image']}")
        if result["assumed_fields"]:
            print(f"# assumed (not given): {', '.join(result['assumed_fields'])}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceaudit", description="Explain and audit ONNX face models.")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="load, inspect and score models").add_subparsers(dest="action", required=True)
    inspect = models.add_parser("inspect", help="show the inferred spec, operators and batch behaviour")
    _add_model_arguments(inspect)
    inspect.set_defaults(run=cmd_inspect)
    score = models.add_parser("score", help="score images: class score, or cosine to reference images")
    _add_model_arguments(score)
    score.add_argument("--image", action="append", required=True, help="image to score (repeatable)")
    score.add_argument("--target", type=int, help="class index (classifiers)")
    score.add_argument("--reference", action="append", help="reference image (embedding models; repeatable)")
    score.set_defaults(run=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except FaceAuditError as exc:
        print(f"faceaudit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
