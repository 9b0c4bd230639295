"""`faceaudit models inspect` and `faceaudit models score`."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from faceaudit.cli.model_args import open_model
from faceaudit.engine.prepare import prepare
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer, embed
from faceaudit.errors import InvalidRequest
from faceaudit.images.io import load_image
from faceaudit.model_info import inspect_model, render_text


def cmd_inspect(args: argparse.Namespace) -> int:
    loaded, spec, options = open_model(args)
    info = inspect_model(loaded, spec, options).to_dict()
    print(json.dumps(info, indent=2) if args.json else render_text(info))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    loaded, spec, options = open_model(args)
    model = prepare(loaded, spec, options)
    images = np.stack([load_image(p, spec, field=f"image[{i}]") for i, p in enumerate(args.image)])
    if spec.require("kind") == "classifier":
        if args.target is None or args.reference:
            raise InvalidRequest("target", "a classifier is scored for --target CLASS_INDEX (and takes no --reference)")
        target: ClassTarget | EmbeddingTarget = ClassTarget(args.target)
    else:
        if args.target is not None:
            raise InvalidRequest("target", "an embedding model is scored against --reference images, not a class")
        if not args.reference:
            raise InvalidRequest("reference", "an embedding model needs --reference IMAGE (mate, then non-mate)")
        refs = np.stack([load_image(p, spec, field=f"reference[{i}]") for i, p in enumerate(args.reference)])
        target = EmbeddingTarget(embed(model, refs))
    scorer = Scorer(model, target)
    scores = scorer.score([images])
    warnings = []
    if model.batch.dependent and not options.exact:
        warnings.append("the model is batch-dependent: scores depend on batch composition; use --exact")
    result = {
        "model": loaded.sha256,
        "provider": scorer.stats.provider,
        "batch": model.batch.mode,
        "spec": spec.to_dict(),
        "assumed_fields": spec.assumed_fields(),
        "warnings": warnings,
        "scores": [{"image": p, "score": np.asarray(s).tolist()} for p, s in zip(args.image, scores)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for row in result["scores"]:
        print(f"{row['score']}\t{row['image']}")
    assumed = ", ".join(f"{f}={spec.to_dict()[f]['value']}" for f in result["assumed_fields"])
    print(f"# {scorer.stats.provider}, batch {model.batch.mode}" + (f"; assumed: {assumed}" if assumed else ""), file=sys.stderr)
    for warning in warnings:
        print(f"# warning: {warning}", file=sys.stderr)
    return 0
