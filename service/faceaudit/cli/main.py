"""`faceaudit` command line.

    faceaudit models inspect MODEL.onnx [spec flags] [--json]
    faceaudit models score MODEL.onnx --image FACE.png [--image ...] (--target K | --reference MATE.png ...)
    faceaudit explain --model M.onnx --image FACE.png --method NAME [--target K | --mate M.png [--non-mate N.png]]
                      [--server HOST:PORT [--token-file F] [--tls-root R.pem]]
                      [method options] [--landmarks L.json | --landmark-model L.onnx] --out DIR
    faceaudit cms --model M.onnx --images DIR [--target K] [--landmarks L.json | --landmark-model L.onnx] --out DIR
    faceaudit evaluate --model M.onnx --dataset DIR --game GAME [--methods a,b] --out DIR [--server HOST:PORT]
    faceaudit audit [--model M.onnx --dataset DIR [--methods a,b] [--games x,y] --out DIR]   (no arguments: the demo)
    faceaudit gate --baseline AUDIT|M.onnx --candidate AUDIT|M.onnx --policy POLICY.yaml [--dataset DIR]
                   [--markdown FILE] [--junit FILE]
    faceaudit serve [--port P] [--metrics-port P] [--model-repository DIR] [--max-batch N] [--max-queue-delay-ms MS]
                    [--token-file F] [--tls-cert C --tls-key K]   (flags fall back to FACEAUDIT_* variables)
    faceaudit health [--server HOST:PORT] [--service NAME] [--wait S]   (exit 0 serving, 1 not, 2 unreachable)

Spec flags override what a spec file next to the model (MODEL.spec.yaml|yml|json) says, which
overrides what the graph reveals. Errors print one line naming the field and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faceaudit.cli.audit import add_audit_arguments, cmd_audit
from faceaudit.cli.cms import add_cms_arguments, cmd_cms
from faceaudit.cli.evaluate import add_evaluate_arguments, cmd_evaluate
from faceaudit.cli.explain import add_explain_arguments, cmd_explain
from faceaudit.cli.gate import add_gate_arguments, cmd_gate
from faceaudit.cli.health import add_health_arguments, cmd_health
from faceaudit.cli.model_args import add_model_arguments
from faceaudit.cli.models import cmd_inspect, cmd_score
from faceaudit.cli.serve import add_serve_arguments, cmd_serve
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
    evaluate = commands.add_parser("evaluate", help="one evaluation game over a dataset, its points printed as computed")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(run=cmd_evaluate)
    audit = commands.add_parser("audit", help="model-level audit over a dataset (no arguments: the bundled demo)")
    add_audit_arguments(audit)
    audit.set_defaults(run=cmd_audit)
    gate = commands.add_parser("gate", help="compare a candidate audit (or model) with a baseline under a policy; "
                                            "exit 1 on a regression")
    add_gate_arguments(gate)
    gate.set_defaults(run=cmd_gate)
    serve = commands.add_parser("serve", help="run the gRPC service (flags fall back to FACEAUDIT_* environment variables)")
    add_serve_arguments(serve)
    serve.set_defaults(run=cmd_serve)
    health = commands.add_parser("health", help="is a faceaudit server serving? exit 0 yes, 1 no (draining), 2 unreachable")
    add_health_arguments(health)
    health.set_defaults(run=cmd_health)
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
