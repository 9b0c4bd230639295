"""`faceaudit gate` from the command line: exit status, Markdown on stdout, report files."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest

from faceaudit.cli.main import main
from tests.gate.audits import audit_data, point_map, write_audit
from tests.gate.test_policy import EXAMPLE

POLICY = """\
rules:
  - metric: games.hiding_game.summary.*.auc_accuracy
    exclude: [random]
    better: higher
    max_drop: 0.02
  - cms_drift: overall
    measure: emd
    max: 1
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY, encoding="utf-8")
    write_audit(tmp_path / "baseline")
    write_audit(tmp_path / "same")
    regressed = copy.deepcopy(audit_data())
    regressed["games"]["hiding_game"]["summary"]["rise"]["auc_accuracy"] = 0.65  # planted drop of 0.05
    write_audit(tmp_path / "regressed", regressed, {"maps/cms.npy": point_map((16, 16), (4, 6))})  # moved 2 px
    return tmp_path


def _gate(files, candidate, *extra):
    return main(["gate", "--baseline", str(files / "baseline" / "audit.json"), "--candidate", str(files / candidate),
                 "--policy", str(files / "policy.yaml"), *extra])


def test_an_identical_audit_passes_with_status_0_and_writes_both_reports(files, capsys):
    assert _gate(files, "same", "--junit", str(files / "gate.xml"), "--markdown", str(files / "gate.md")) == 0
    out = capsys.readouterr().out
    assert out.startswith("## faceaudit gate: PASSED") and out == (files / "gate.md").read_text(encoding="utf-8")
    cases = ET.parse(files / "gate.xml").getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["dataset.manifest_sha256", "games.hiding_game.summary.ebp.auc_accuracy",
                                              "games.hiding_game.summary.rise.auc_accuracy", "cms.overall emd"]


def test_a_planted_regression_fails_with_status_1(files, capsys):
    assert _gate(files, "regressed", "--junit", str(files / "gate.xml")) == 1
    out = capsys.readouterr().out
    assert out.startswith("## faceaudit gate: FAILED (2 of 4 checks)")
    assert "drop 0.05 > max_drop 0.02" in out and "emd 2 px > max 1 px" in out
    failures = [c.get("name") for c in ET.parse(files / "gate.xml").getroot().iter("testcase") if c.find("failure") is not None]
    assert failures == ["games.hiding_game.summary.rise.auc_accuracy", "cms.overall emd"]


def test_the_example_policy_runs_from_the_command_line(files, capsys):
    # The hand-made audits lack the confidence and deletion games: those lines fail, naming the path.
    assert main(["gate", "--baseline", str(files / "baseline"), "--candidate", str(files / "same"),
                 "--policy", str(EXAMPLE)]) == 1
    assert "the baseline audit has no games.confidence.summary.*.win_pct" in capsys.readouterr().out


@pytest.mark.parametrize("setup, field", [
    (lambda f: (f / "policy.yaml").write_text("rules:\n  - metric: a.b\n    max_dorp: 1\n"), "policy.rules[0].max_dorp"),
    (lambda f: (f / "same" / "audit.json").write_text("{not json"), "candidate"),
    (lambda f: (f / "same" / "audit.json").write_text('{"schema": "other"}'), "candidate.schema"),
    (lambda f: (f / "same" / "maps" / "cms.npy").unlink(), "candidate.cms.overall.file"),
])
def test_a_bad_policy_or_unreadable_audit_exits_2_naming_the_field(files, capsys, setup, field):
    setup(files)
    assert _gate(files, "same") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"faceaudit: error: {field}: ") and captured.out == ""


def test_a_model_needs_a_dataset(files, capsys):
    assert _gate(files, "candidate.onnx") == 2
    assert "dataset: --candidate is a model (candidate.onnx); auditing it needs --dataset DIR" in capsys.readouterr().err
