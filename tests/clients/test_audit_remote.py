"""`faceaudit audit --server`: audit.json of a server's dataset folder equals the local audit's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faceaudit.cli.main import main
from faceaudit.server import audit_service
from faceaudit_client import Client, MissingMapFiles
from faceaudit_client.client import map_files

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


def remote_audit(auditing: str, out: Path, *extra: str, dataset: str = "faces") -> list[str]:
    return ["audit", "--quiet", "--methods", "occlusion", "--games", "confidence", *OPTIONS, "--model", "attribute",
            "--dataset", dataset, "--out", str(out), "--server", auditing, *extra]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def stale_run(out: Path) -> None:
    """What an earlier audit into `out` left: a CMS picture, a row of a larger dataset, its report."""
    for name in ("maps/cms.png", "maps/rows/00099/image.png", "maps/rows/00099/occlusion.npy", "report.html"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"earlier run")


def test_an_earlier_runs_map_files_are_replaced_by_this_runs(auditing, tmp_path, capsys):
    """After the run OUT/maps holds exactly the files the audit lists, all of them this run's."""
    stale_run(tmp_path)
    assert main(remote_audit(auditing, tmp_path, "--json")) == 0
    printed = json.loads(capsys.readouterr().out)["audits"][0]
    listed = map_files(json.loads((tmp_path / "audit.json").read_text()))
    assert files_under(tmp_path) == listed | {"audit.json", "report.html"}  # no stale file, no staging folder
    assert (tmp_path / "maps/cms.png").read_bytes() != b"earlier run"
    assert (tmp_path / "report.html").read_bytes() != b"earlier run" and printed["missing_map_files"] == 0


def test_a_server_that_sends_no_map_files_gets_no_report_and_a_warning(auditing, tmp_path, capsys, monkeypatch):
    """A server older than return_maps sends none (simulated: the servicer's file stream is empty). The
    earlier run's pictures and report must not pass for this run's: they go, and no report is written."""
    monkeypatch.setattr(audit_service, "map_chunks", lambda out: iter(()))
    stale_run(tmp_path)
    assert main(remote_audit(auditing, tmp_path, "--json")) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)["audits"][0]
    listed = map_files(json.loads((tmp_path / "audit.json").read_text()))
    assert listed and printed["report"] is None and printed["missing_map_files"] == len(listed)
    assert f"warning: the server sent 0 of the {len(listed)} map files the audit lists" in captured.err
    assert "report.html, which shows them, is not written" in captured.err
    assert files_under(tmp_path) == {"audit.json"}


def test_the_client_warns_when_map_files_it_was_asked_for_do_not_come(auditing, tmp_path, monkeypatch):
    monkeypatch.setattr(audit_service, "map_chunks", lambda out: iter(()))
    with Client(auditing, timeout=60) as client, pytest.warns(MissingMapFiles, match="sent 0 of the") as caught:
        summary = client.audit("attribute", "faces", methods=["occlusion"], games=["confidence"], out=tmp_path,
                               options={"cms": {"patch": 16, "stride": 8}, "methods": {"occlusion": {"patch": 16,
                                                                                                    "stride": 16}}})
    assert sorted(caught[0].message.missing) == sorted(map_files(summary)) and "maps/cms.png" in map_files(summary)


def test_files_an_audit_does_not_write_are_refused_not_deleted(auditing, tmp_path, capsys):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "notes.txt").write_text("mine")
    assert main(remote_audit(auditing, tmp_path)) == 2
    assert "out: " in capsys.readouterr().err and (tmp_path / "maps" / "notes.txt").read_text() == "mine"
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "maps").symlink_to(tmp_path / "maps")
    assert main(remote_audit(auditing, linked)) == 2
    assert "is not a folder of an earlier audit's map files" in capsys.readouterr().err


def test_a_failed_run_leaves_the_earlier_run_as_it_was(auditing, tmp_path, capsys):
    stale_run(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in files_under(tmp_path)}
    assert main(remote_audit(auditing, tmp_path, dataset="missing")) == 2
    assert "NOT_FOUND: dataset" in capsys.readouterr().err
    assert {name: (tmp_path / name).read_bytes() for name in files_under(tmp_path)} == before
    assert not list(tmp_path.glob(".faceaudit-maps-*"))


def without_seconds(value):
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value
