"""The two sides of the gate as audits: an audit given as such, or a model audited first.

A path ending in .onnx is a model: it is audited with faceaudit.audit.run.run_audit on the
dataset, with the policy's `audit:` methods, games, options and group column (the same for both
sides, so the two audits are comparable), into `work`; its spec comes from the spec file next to
it (MODEL.spec.yaml), as for every command. Anything else is an audit.json or its folder. Writes
only inside `work`.
"""

from __future__ import annotations

from pathlib import Path

from faceaudit.audit.run import run_audit
from faceaudit.errors import InvalidRequest
from faceaudit.gate.audits import Audit, load_audit
from faceaudit.gate.policy import Policy
from faceaudit.methods.common import Progress

__all__ = ["audit_of"]


def audit_of(path: str | Path, side: str, *, dataset: str | Path | None, work: Path, policy: Policy,
             progress: Progress | None = None) -> Audit:
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        return load_audit(path, side)
    if dataset is None:
        raise InvalidRequest("dataset", f"--{side} is a model ({path.name}); auditing it needs --dataset DIR")
    audit_json = run_audit(path, dataset, work, methods=policy.audit.get("methods"), games=policy.audit.get("games"),
                           options=policy.audit.get("options"), group_column=policy.audit.get("group_column"),
                           progress=progress)
    return load_audit(audit_json, side)
