"""`faceaudit audit --server`: audit.json of a server's dataset folder equals the local audit's numbers."""

from __future__ import annotations

import json

import pytest

from faceaudit.cli.main import main

from tests.clients.conftest import DEMO_MODELS

OPTIONS = ["--option", "cms.patch=16", "--option", "cms.stride=8", "--option", "occlusion.patch=16",
           "--option", "occlusion.stride=16"]


def test_remote_audit_writes_the_local_audit_json(auditing, datasets, tmp_path, capsys):
    common = ["audit", "--quiet", "--methods", "occlusion", "--games", "confidence", "--group-column", "skin", *OPTIONS]
    assert main([*common, "--model", str(DEMO_MODELS / "attribute.onnx"), "--dataset", str(datasets / "faces"),
                 "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert main([*common, "--model", "attribute", "--dataset", "faces", "--out", str(tmp_path / "remote"),
                 "--server", auditing, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    local = json.loads((tmp_path / "local" / "audit.json").read_text())
    remote = json.loads((tmp_path / "remote" / "audit.json").read_text())
    assert printed["audits"][0]["audit"] == str(tmp_path / "remote" / "audit.json")
    assert remote["dataset"]["path"] == "faces" and remote["model"]["name"] == "attribute"  # no server paths
    for audit in (local, remote):
        del audit["dataset"]["path"], audit["model"]["path"], audit["model"]["name"], audit["created"]
    assert without_seconds(remote) == without_seconds(local)  # maps' numbers, CMS, games: all equal
    # The map files came back (byte for byte the local ones) and the report was written over them.
    local_maps = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local" / "maps").rglob("*.npy"))
    assert local_maps and local_maps == sorted(p.relative_to(tmp_path / "remote")
                                               for p in (tmp_path / "remote" / "maps").rglob("*.npy"))
    for relative in local_maps:
        assert (tmp_path / "remote" / relative).read_bytes() == (tmp_path / "local" / relative).read_bytes()
    assert printed["audits"][0]["report"] == str(tmp_path / "remote" / "report.html")
    report = (tmp_path / "remote" / "report.html").read_text()
    assert "maps/cms.png" in report or "data:image/png" in report


def test_file_chunks_are_written_in_place_and_paths_cannot_leave_the_folder(tmp_path):
    from faceaudit.v1 import faceaudit_pb2 as pb
    from faceaudit_client.client import _FileSink

    sink = _FileSink(tmp_path)
    for chunk in (pb.FileChunk(path="maps/a.npy", data=b"12"), pb.FileChunk(path="maps/a.npy", data=b"3", last=True),
                  pb.FileChunk(path="maps/rows/00001/b.png", data=b"", last=True)):
        sink.write(chunk)
    sink.finish()
    assert (tmp_path / "maps" / "a.npy").read_bytes() == b"123"
    assert (tmp_path / "maps/rows/00001/b.png").read_bytes() == b""
    for bad in ("../x.png", "/etc/x.png", "maps/../../x.png", "maps\\..\\..\\evil.png", "C:\\x\\evil.png",
                "maps/./a.png", "maps/a.sh", ".git/hooks/post-checkout", "maps//a.png", "maps/.hidden.png"):
        with pytest.raises(RuntimeError, match="not a map file"):
            _FileSink(tmp_path).write(pb.FileChunk(path=bad, data=b"x", last=True))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "maps").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="not a map file"):  # an existing symlink does not lead out either
        _FileSink(tmp_path / "linked").write(pb.FileChunk(path="maps/a.npy", data=b"x", last=True))
    unfinished = _FileSink(tmp_path)
    unfinished.write(pb.FileChunk(path="maps/c.npy", data=b"x"))
    with pytest.raises(RuntimeError, match="incomplete"):
        unfinished.finish()


def test_the_demo_and_local_manifests_are_refused_remotely(auditing, tmp_path, capsys):
    assert main(["audit", "--server", auditing, "--out", str(tmp_path)]) == 2
    assert "model: with --server give --model and --dataset" in capsys.readouterr().err
    assert main(["audit", "--server", auditing, "--model", "attribute", "--dataset", "missing", "--out", str(tmp_path),
                 "--quiet"]) == 2
    assert "NOT_FOUND: dataset" in capsys.readouterr().err


def without_seconds(value):
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value
