"""`faceaudit explain`: one saliency map of one face, saved as .npy, .json and a PNG overlay.

With --server HOST:PORT the map is computed by a faceaudit server (faceaudit_client) and saved
here exactly as a local map is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.cli.alignment_args import (
    add_alignment_arguments, canonical_backdrop, correspondence_source, landmarks_to_send,
)
from faceaudit.cli.model_args import open_model
from faceaudit.cli.progress import ProgressBar
from faceaudit.cli.remote import add_remote_arguments, connect, progress_bar, refuse_local_flags, remote_model
from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.errors import InvalidRequest
from faceaudit.images.io import fit_to_model, load_image, read_image
from faceaudit.methods.common import ExplainTarget, predicted_class
from faceaudit.methods.registry import METHODS, explain, get_method
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.models.spec import ModelSpec
from faceaudit_client import Pair

# Method options that have a flag of their own; any other goes through --option KEY=VALUE.
OPTION_FLAGS = ("patch", "stride", "fill", "masks", "cells", "keep", "seed", "mode", "chunk", "layer")


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="the face to explain (the probe, for embedding models)")
    parser.add_argument("--method", required=True, help=f"one of {', '.join(m.replace('_', '-') for m in METHODS)}")
    target = parser.add_argument_group("target")
    target.add_argument("--target", type=int, help="class index (classifiers; default: the predicted class)")
    target.add_argument("--mate", help="mate image (embedding models)")
    target.add_argument("--non-mate", help="non-mate image: gives the contrastive map (embedding models)")
    options = parser.add_argument_group("method options (defaults: the papers'; see the method's docs)")
    options.add_argument("--patch", help="occlusion patch side, px")
    options.add_argument("--stride", help="occlusion stride, px")
    options.add_argument("--fill", help="occluded pixels: zero, mean, dataset_mean, blur, constant")
    options.add_argument("--masks", help="RISE masks N")
    options.add_argument("--cells", help="RISE grid cells per side")
    options.add_argument("--keep", help="RISE keep probability p")
    options.add_argument("--seed", help="random seed")
    options.add_argument("--mode", help="xface mode: probe or both")
    options.add_argument("--chunk", help="perturbations per streamed chunk")
    options.add_argument("--layer", help="white-box methods: the tensor a map is read at (input, last_conv, or a name)")
    options.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="any other method option")
    add_alignment_arguments(parser)
    parser.add_argument("--out", required=True, help="folder for <image>.<method>.npy/.json/.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_remote_arguments(parser)


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    values = {name: getattr(args, name) for name in OPTION_FLAGS if getattr(args, name, None) is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest("option", f"{item!r} is not KEY=VALUE")
        values[key.strip()] = value.strip()
    return values


def explain_target(args: argparse.Namespace, model: PreparedModel, image: np.ndarray) -> ExplainTarget:
    spec = model.spec
    if spec.require("kind") == "classifier":
        if args.mate or args.non_mate:
            raise InvalidRequest("mate", "a classifier is explained for a class (--target), not against a mate")
        if args.target is not None:
            return ExplainTarget(class_index=args.target)
        return ExplainTarget(class_index=predicted_class(model, image))
    if args.target is not None:
        raise InvalidRequest("target", "an embedding model is explained against --mate, not a class index")
    if not args.mate:
        raise InvalidRequest("mate", "an embedding model needs --mate IMAGE (and optionally --non-mate IMAGE)")
    mate = load_image(args.mate, spec, field="mate")
    non_mate = load_image(args.non_mate, spec, field="non_mate") if args.non_mate else None
    return ExplainTarget(mate=mate, non_mate=non_mate)


def output_folder(path: str) -> Path:
    """`--out`, created now so that a bad path fails before any work is done."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest("out", f"cannot create the folder {folder}: {exc.strerror or exc}") from exc
    return folder


def cmd_explain(args: argparse.Namespace) -> int:
    if args.server is not None:
        return explain_remotely(args)
    out = output_folder(args.out)
    loaded, spec, runtime = open_model(args)
    model = prepare(loaded, spec, runtime)
    original = read_image(args.image, field="image")
    image = fit_to_model(original.astype(np.float32), spec)
    target = explain_target(args, model, image)
    progress = None if args.quiet else ProgressBar(Path(args.image).name)
    context = {}
    if get_method(args.method).name == "cis":
        context["correspondence"] = correspondence_source(args, spec)(Path(args.image).name, original, image)
    elif args.landmarks or args.landmark_model:
        raise InvalidRequest("landmarks", "only the canonical methods (cis, and the cms command) use landmarks")
    result = explain(model, args.method, image=image, target=target, options=method_options(args), progress=progress,
                     **context)
    backdrop = image if result.frame == "input" else canonical_backdrop(args, result.values.shape)
    return save_and_report(args, out, result, original, image, backdrop, spec.assumed_fields())


def explain_remotely(args: argparse.Namespace) -> int:
    """The same map computed by the server: the image file and targets are sent as encoded files."""
    refuse_local_flags(args, sent=("landmarks",))
    out = output_folder(args.out)
    original = read_image(args.image, field="image")  # read here too: the backdrop and the warnings
    if args.landmarks and get_method(args.method).name != "cis":
        raise InvalidRequest("landmarks", "only the canonical methods (cis, and the cms command) use landmarks")
    landmarks = landmarks_to_send(args, Path(args.image).name)
    with connect(args) as client:
        model = remote_model(client, args)
        if model.kind == "classifier":
            if args.mate or args.non_mate:
                raise InvalidRequest("mate", "a classifier is explained for a class (--target), not against a mate")
            target = args.target
        else:
            if args.target is not None:
                raise InvalidRequest("target", "an embedding model is explained against --mate, not a class index")
            if not args.mate:
                raise InvalidRequest("mate", "an embedding model needs --mate IMAGE (and optionally --non-mate IMAGE)")
            target = Pair(Path(args.mate), Path(args.non_mate) if args.non_mate else None)
        result = client.explain(model, Path(args.image), method=args.method, target=target, landmarks=landmarks,
                                options=method_options(args), progress=progress_bar(args, Path(args.image).name))
    image = fit_to_model(original.astype(np.float32), ModelSpec(height=model.height, width=model.width))
    backdrop = image if result.frame == "input" else canonical_backdrop(args, result.values.shape)
    return save_and_report(args, out, result, original, image, backdrop, model.details.get("assumed_fields", []))


def save_and_report(args: argparse.Namespace, out: Path, result: SaliencyMap, original: np.ndarray, image: np.ndarray,
                    backdrop: np.ndarray | None, assumed_fields: list[str]) -> int:
    """Write <image>.<method>.npy/.json/.png and print their paths (or the summary with --json)."""
    warnings = resize_warnings(original, image) + ([result.extra["warning"]] if "warning" in result.extra else [])
    result.extra["original_size"] = list(original.shape[:2])
    paths = result.save(out, image=backdrop, stem=f"{Path(args.image).stem}.{result.method}")
    summary = {
        "method": result.method, "target": result.target, "forward_passes": result.forward_passes,
        "seconds": round(result.timings["total_s"], 3), "files": {k: str(v) for k, v in paths.items()},
        "assumed_fields": assumed_fields, "warnings": warnings,
        "extra": {k: v for k, v in result.extra.items() if k not in ("batch", "warning")},
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print("\n".join(summary["files"].values()))
    for warning in warnings:
        print(f"# warning: {warning}", file=sys.stderr)
    return 0


def resize_warnings(original: np.ndarray, image: np.ndarray) -> list[str]:
    """A warning when fitting the image to the model changed its aspect ratio by more than 1 %."""
    (h0, w0), (h1, w1) = original.shape[:2], image.shape[:2]
    change = abs((w1 / h1) / (w0 / h0) - 1.0)
    if change <= 0.01:
        return []
    return [f"the {w0}x{h0} image was stretched to the model's {w1}x{h1} input (aspect ratio changed by "
            f"{change:.0%}): crop it to the model's aspect ratio first for a faithful map"]
