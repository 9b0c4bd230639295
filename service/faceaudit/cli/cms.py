"""`faceaudit cms`: the canonical model saliency map of a classifier over a folder of faces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from faceaudit.cli.alignment_args import add_alignment_arguments, canonical_backdrop, correspondence_source
from faceaudit.cli.explain import method_options, output_folder
from faceaudit.cli.model_args import open_model
from faceaudit.cli.progress import ProgressBar
from faceaudit.engine.prepare import prepare
from faceaudit.errors import InvalidRequest
from faceaudit.images.io import fit_to_model, read_image
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.cms import CmsAccumulator
from faceaudit.methods.common import ExplainTarget, options_from, predicted_class

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def add_cms_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="folder of face images (png, jpg, ...)")
    parser.add_argument("--target", type=int, help="class explained for every image (default: each image's predicted class)")
    options = parser.add_argument_group("CIS options")
    for name in ("patch", "stride", "fill", "chunk"):
        options.add_argument(f"--{name}")
    options.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    add_alignment_arguments(parser)
    parser.add_argument("--out", required=True, help="folder for cms.npy/.json/.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_cms(args: argparse.Namespace) -> int:
    loaded, spec, runtime = open_model(args)
    model = prepare(loaded, spec, runtime)
    if spec.require("kind") != "classifier":
        raise InvalidRequest("kind", "the cms command explains classifiers; for embedding models use "
                                     "faceaudit.methods.cms.cms with mate images from Python")
    folder = Path(args.images)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise InvalidRequest("images", f"{folder} is not a folder with PNG/JPEG images")
    options = options_from(CisOptions, method_options(args))
    out = output_folder(args.out)
    correspond = correspondence_source(args, spec, per_image=True)
    bar = None if args.quiet else ProgressBar(folder.name)
    accumulator = CmsAccumulator()  # constant memory: a running sum and a count
    for done, path in enumerate(files, start=1):
        original = read_image(path, field=f"images/{path.name}")
        image = fit_to_model(original.astype(np.float32), spec)
        index = args.target if args.target is not None else predicted_class(model, image)
        accumulator.add(cis(model, image=image, target=ExplainTarget(class_index=index), options=options,
                            correspondence=correspond(path.name, original, image)))
        if bar is not None:
            bar(done, len(files), "cms")
    result = accumulator.result()
    result.extra["image_names"] = [p.name for p in files]
    paths = result.save(out, image=canonical_backdrop(args, result.values.shape), stem="cms")
    summary = {"images": len(files), "forward_passes": result.forward_passes, "seconds": round(result.timings["total_s"], 3),
               "files": {k: str(v) for k, v in paths.items()}}
    print(json.dumps(summary, indent=2) if args.json else "\n".join(summary["files"].values()))
    return 0
