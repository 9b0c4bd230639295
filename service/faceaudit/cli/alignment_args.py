"""Flags that say how input faces correspond to the canonical face (for `cis` and `cms`).

Without flags the model's input crop is the canonical frame (pre-aligned crops). `--landmarks`
gives each image's landmarks (pixels of the image file, K×2 as x, y); `--landmark-model` predicts
them with an ONNX model. Either way the landmarks are mapped onto `--template` (five ArcFace
points or the 68-point mean face) in a canonical frame of the model's input size.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceaudit.alignment import (
    Correspondence, LandmarkAligner, OnnxLandmarkAligner, PreAligned, mean_face_68, mean_face_68_on, neutral_face,
)
from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.errors import InvalidRequest
from faceaudit.models import ModelSpec

# correspond(name, original image, model-sized image) -> Correspondence
Correspond = Callable[[str, np.ndarray, np.ndarray], Correspondence]


def add_alignment_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("alignment (cis, cms)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--landmarks", help="JSON: {image file name: [[x, y], ...]} in the image's pixels "
                                            "(explain also takes a bare [[x, y], ...] list)")
    source.add_argument("--landmark-model", help="ONNX model predicting K×2 landmarks")
    group.add_argument("--landmark-units", choices=["normalized", "pixels"], help="units of --landmark-model's output")
    group.add_argument("--template", choices=["arcface5", "mean68"], default="arcface5",
                       help="canonical landmark template (default arcface5)")
    group.add_argument("--margin", type=float, default=0.5,
                       help="extend the template's triangulation beyond its hull by this fraction (default 0.5)")


def correspondence_source(args: argparse.Namespace, spec: ModelSpec, *, per_image: bool = False) -> Correspond:
    """How each image corresponds to the canonical frame; `per_image` refuses one list for all images."""
    shape = (spec.require("height"), spec.require("width"))
    if not args.landmarks and not args.landmark_model:
        aligner = PreAligned(shape)
        return lambda name, original, image: aligner.correspond(image)
    if args.template == "arcface5":
        template = arcface_for_frame(shape)
    else:
        template = mean_face_68(shape)
    landmark_aligner = LandmarkAligner(template, shape, margin=args.margin)
    if args.landmark_model:
        if args.landmark_units is None:
            raise InvalidRequest("landmark_units", "declare the landmark model's output units: normalized or pixels")
        predictor = OnnxLandmarkAligner.load(args.landmark_model, landmark_aligner, units=args.landmark_units)
        return lambda name, original, image: predictor.correspond(image)
    table = read_landmarks(Path(args.landmarks), len(template))
    if per_image and "*" in table:
        raise InvalidRequest("landmarks", "give a mapping of image file names to landmarks, one entry per image")

    def correspond(name: str, original: np.ndarray, image: np.ndarray) -> Correspondence:
        points = table.get(name, table.get("*"))
        if points is None:
            raise InvalidRequest("landmarks", f"no landmarks for {name!r} in {args.landmarks}")
        return landmark_aligner.correspond(image, points, given_in=original.shape[:2])

    return correspond



def read_landmarks(path: Path, count: int) -> dict[str, np.ndarray]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("landmarks", f"cannot read {path} as JSON: {exc}") from exc
    if isinstance(data, list):
        data = {"*": data}
    if not isinstance(data, dict):
        raise InvalidRequest("landmarks", f"{path} must hold a list of [x, y] or a mapping of image names to lists")
    try:
        table = {str(k): np.asarray(v, dtype=np.float64) for k, v in data.items()}
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("landmarks", f"{path}: landmarks must be numbers ({exc})") from exc
    for name, points in table.items():
        if points.shape != (count, 2):
            where = "" if name == "*" else f" for {name!r}"
            raise InvalidRequest("landmarks", f"expected {count} [x, y] points{where}, got shape {points.shape}")
    return table


def landmarks_to_send(args: argparse.Namespace, image_name: str) -> np.ndarray | None:
    """`explain --server`: the image's landmarks from --landmarks (the server aligns them onto the template
    their count names: 5 ArcFace points or the 68-point mean face, with the default --margin)."""
    if not args.landmarks:
        return None
    if args.margin != 0.5:
        raise InvalidRequest("margin", "with --server the server aligns with its default margin (0.5)")
    table = read_landmarks(Path(args.landmarks), 5 if args.template == "arcface5" else 68)
    points = table.get(image_name, table.get("*"))
    if points is None:
        raise InvalidRequest("landmarks", f"no landmarks for {image_name!r} in {args.landmarks}")
    return points


def canonical_backdrop(args: argparse.Namespace, shape: tuple[int, int]) -> np.ndarray:
    """The neutral face that canonical maps are drawn over, laid out like the canonical frame."""
    if (args.landmarks or args.landmark_model) and args.template == "arcface5":
        return neutral_face(shape, mean_face_68_on(arcface_for_frame(shape)))
    return neutral_face(shape)
