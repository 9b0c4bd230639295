"""`faceaudit gate`: block a model release when its audit regresses against the baseline's.

    faceaudit gate --baseline AUDIT|MODEL.onnx --candidate AUDIT|MODEL.onnx --policy POLICY.yaml
                   [--dataset DIR] [--work DIR] [--markdown FILE] [--junit FILE] [--quiet]

AUDIT is an audit.json or the folder holding it. A model is audited first (faceaudit.audit.run)
on --dataset, into --work (default: a temporary folder, removed afterwards). Prints the Markdown
summary; exit status 0 if every policy line passes, 1 if one fails, 2 for a bad policy, an
unreadable audit or any other error naming the field.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from faceaudit.cli.progress import ProgressBar
from faceaudit.errors import InvalidRequest
from faceaudit.gate.compare import compare
from faceaudit.gate.inputs import audit_of
from faceaudit.gate.junit import junit_xml
from faceaudit.gate.policy import load_policy
from faceaudit.gate.summary import markdown_summary


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", required=True, help="baseline audit.json (or its folder), or an ONNX model")
    parser.add_argument("--candidate", required=True, help="candidate audit.json (or its folder), or an ONNX model")
    parser.add_argument("--policy", required=True, help="policy YAML (see deploy/gate-policy.example.yaml)")
    parser.add_argument("--dataset", help="dataset folder (with manifest.csv) to audit a model given instead of an audit")
    parser.add_argument("--work", help="folder for the audits computed from models (default: temporary, removed)")
    parser.add_argument("--markdown", help="also write the Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--junit", help="write JUnit XML here: one test case per policy line")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while auditing models")


def cmd_gate(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)  # first: a bad policy fails before any audit is computed
    with tempfile.TemporaryDirectory(prefix="faceaudit-gate-") as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        audits = [audit_of(getattr(args, side), side, dataset=args.dataset, work=work / side, policy=policy,
                           progress=None if args.quiet else ProgressBar(side))
                  for side in ("baseline", "candidate")]
        result = compare(*audits, policy)
    text = markdown_summary(result)
    print(text, end="")
    if args.markdown:
        _write(args.markdown, text, "markdown")
    if args.junit:
        _write(args.junit, junit_xml(result), "junit")
    return 0 if result.passed else 1


def _write(path: str, text: str, field: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(field, f"cannot write {path}: {exc}") from exc
