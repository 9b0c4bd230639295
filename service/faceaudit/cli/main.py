"""`faceaudit` command line.

    faceaudit models inspect MODEL.onnx [spec flags] [--json]
    faceaudit models score MODEL.onnx --image FACE.png [--image ...] (--target K | --reference MATE.png ...)
    faceaudit explain --model M.onnx --image FACE.png --method NAME [--target K | --mate M.png [--non-mate N.png]]
                      [method options] [--landmarks L.json | --landmark-model L.onnx] --out DIR
    faceaudit cms --model M.onnx --images DIR [--target K] [--landmarks L.json | --landmark-model L.onnx] --out DIR

Spec flags override what a spec file next to the model (MODEL.spec.yaml|yml|json) says, which
overrides what the graph reveals. Errors print one line naming the field and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faceaudit.cli.cms import add_cms_arguments, cmd_cms
from faceaudit.cli.explain import add_explain_arguments, cmd_explain
from faceaudit.cli.model_args import add_model_arguments
from faceaudit.cli.models import cmd_inspect, cmd_score
from faceaudit.errors import FaceAuditError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceaudit", description="Explain and audit ONNX face models.")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="load, inspect and score models").add_subparsers(dest="action", required=True)
    inspect = models.add_parser("inspect", help="show the inferred spec, operators and batch behaviour")
    add_model_arguments(inspect)
    inspect.set_defaults(run=cmd_inspect)
    score = models.add_parser("score", help="score images: class score, or cosine to reference images")
    add_model_arguments(score)
    score.add_argument("--image", action="append", required=True, help="image to score (repeatable)")
    score.add_argument("--target", type=int, help="class index (classifiers)")
    score.add_argument("--reference", action="append", help="reference image (embedding models; repeatable)")
    score.set_defaults(run=cmd_score)
    explain = commands.add_parser("explain", help="compute one saliency map and save it")
    add_model_arguments(explain, positional=False)
    add_explain_arguments(explain)
    explain.set_defaults(run=cmd_explain)
    cms = commands.add_parser("cms", help="canonical model saliency map of a classifier over a folder of faces")
    add_model_arguments(cms, positional=False)
    add_cms_arguments(cms)
    cms.set_defaults(run=cmd_cms)
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
