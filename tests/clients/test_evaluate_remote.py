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
