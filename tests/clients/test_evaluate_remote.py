"""`faceaudit evaluate`: one game's points printed as they are computed, locally and with --server alike."""

from __future__ import annotations

import json

import pytest

from faceaudit.cli.main import main

from tests.clients.conftest import DEMO_MODELS

COMMON = ["evaluate", "--quiet", "--json", "--game", "deletion", "--methods", "gradient,occlusion",
          "--option", "deletion.steps=4", "--option", "occlusion.patch=16", "--option", "occlusion.stride=16",
          "--option", "cms.patch=16", "--option", "cms.stride=16"]


def _run(capsys, *argv: str) -> tuple[list[dict], dict]:
    assert main([*COMMON, *argv]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return lines[:-1], lines[-1]


def test_points_printed_are_the_curves_and_the_server_prints_the_same(auditing, datasets, tmp_path, capsys):
    points, summary = _run(capsys, "--model", str(DEMO_MODELS / "attribute.onnx"), "--dataset",
                           str(datasets / "faces"), "--out", str(tmp_path / "local"))
    game = json.loads((tmp_path / "local" / "audit.json").read_text())["games"]["deletion"]
    assert len(points) == 3 * len(game["x"])  # gradient, occlusion, random: one line per point
    for point in points:
        assert point["game"] == "deletion"
        for quantity, value in point["values"].items():
            assert game["curves"][point["series"]][quantity][point["index"]] == pytest.approx(value)
    assert summary["summary"] == game["summary"] and (tmp_path / "local" / "report.html").is_file()
    remote_points, remote_summary = _run(capsys, "--model", "attribute", "--dataset", "faces",
                                         "--out", str(tmp_path / "remote"), "--server", auditing)
    # a local run streams the points as computed, a remote one prints them from the result: same points
    local_values = {(p["series"], p["index"]): p["values"] for p in points}
    assert {(p["series"], p["index"]) for p in remote_points} == local_values.keys()
    for point in remote_points:
        assert point["values"] == pytest.approx(local_values[point["series"], point["index"]])
    assert remote_summary["summary"].keys() == summary["summary"].keys()
    for series, numbers in summary["summary"].items():
        assert remote_summary["summary"][series] == pytest.approx(numbers)


def test_an_unknown_game_is_named(capsys, tmp_path):
    assert main([*COMMON[:3], "--game", "tetris", "--model", str(DEMO_MODELS / "attribute.onnx"), "--dataset",
                 str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "game" in capsys.readouterr().err


def test_correspondence_plays_the_region_column_as_its_part_locally_and_with_server_alike(auditing, datasets, tmp_path,
                                                                                          capsys):
    """A dataset gives correspondence one part, "region" (each row's region mask), in both runs: the local
    audit builds it from the manifest, the server's Audit RPC from the same manifest in its repository."""
    argv = ["evaluate", "--quiet", "--json", "--game", "correspondence", "--methods", "gradient",
            "--option", "correspondence.random_trials=1", "--option", "cms.patch=16", "--option", "cms.stride=16"]
    assert main([*argv, "--model", str(DEMO_MODELS / "attribute.onnx"), "--dataset", str(datasets / "faces"),
                 "--out", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert main([*argv, "--model", "attribute", "--dataset", "faces", "--out", str(tmp_path / "remote"),
                 "--server", auditing]) == 0
    remote = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(local["summary"]) == {"region", "random"}
    assert remote["summary"].keys() == local["summary"].keys()
    for series, deltas in local["summary"].items():
        assert remote["summary"][series] == pytest.approx(deltas)
