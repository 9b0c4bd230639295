"""The checked-in generated code is what the proto produces now (regenerate: python -m faceaudit.server.codegen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceaudit.server import codegen

pytest.importorskip("grpc_tools")


def test_checked_in_code_is_not_stale(tmp_path: Path) -> None:
    fresh = codegen.generate(tmp_path)
    assert {p.name for p in fresh} == {"faceaudit_pb2.py", "faceaudit_pb2.pyi", "faceaudit_pb2_grpc.py"}
    for path in fresh:
        checked_in = codegen.OUT_ROOT / "faceaudit" / "v1" / path.name
        assert checked_in.read_bytes() == path.read_bytes(), (
            f"{checked_in} is stale: run `python -m faceaudit.server.codegen` and commit the result")


def test_a_changed_proto_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above can fail: a proto with one more field generates different code."""
    proto_root = tmp_path / "proto"
    (proto_root / "faceaudit" / "v1").mkdir(parents=True)
    original = (codegen.PROTO_ROOT / "faceaudit" / "v1" / "faceaudit.proto").read_text(encoding="utf-8")
    changed = original.replace("message ListModelsRequest {}", "message ListModelsRequest { string filter = 1; }")
    assert changed != original
    (proto_root / "faceaudit" / "v1" / "faceaudit.proto").write_text(changed, encoding="utf-8")
    monkeypatch.setattr(codegen, "PROTO_ROOT", proto_root)
    out = tmp_path / "out"
    (out / "faceaudit" / "v1").mkdir(parents=True)
    fresh = {p.name: p.read_bytes() for p in codegen.generate(out)}
    assert fresh["faceaudit_pb2.py"] != (codegen.OUT_ROOT / "faceaudit" / "v1" / "faceaudit_pb2.py").read_bytes()
