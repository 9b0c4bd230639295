"""`faceaudit gate` from the command line: exit status, Markdown on stdout, report files."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from PIL import Image

from faceaudit.cli.main import main
from faceaudit.testing import zoo
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


MODEL_POLICY = """\
audit:
  methods: [gradient]
  games: [confidence]
rules:
  - metric: games.confidence.summary.gradient.average_drop_pct
    better: higher
    max_drop: 1
  - cms_drift: overall
    measure: emd
    max: 1
  - cms_drift: overall
    measure: one_minus_correlation
    max: 0.05
  - group_gap: all
    measure: l1
    max_increase: 0.05
"""


@pytest.fixture
def models(tmp_path):
    """Two planted-region classifiers, the candidate's region moved 16 px left, and a small grouped dataset."""
    onnx.save_model(zoo.planted_region_classifier(), tmp_path / "baseline.onnx")
    onnx.save_model(zoo.planted_region_classifier(), tmp_path / "same.onnx")
    onnx.save_model(zoo.planted_region_classifier(box=(8, 16, 4, 12)), tmp_path / "moved.onnx")
    for stem in ("baseline", "same", "moved"):
        (tmp_path / f"{stem}.spec.yaml").write_text("kind: classifier\n", encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,class,group"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"face{i}.png")
        rows.append(f"face{i}.png,{i % 3},{'ab'[i % 2]}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "policy.yaml").write_text(MODEL_POLICY, encoding="utf-8")
    return tmp_path


def _gate_models(models, candidate, *extra):
    return main(["gate", "--baseline", str(models / "baseline.onnx"), "--candidate", str(models / candidate),
                 "--policy", str(models / "policy.yaml"), "--dataset", str(models / "data"), "--quiet", *extra])


def test_models_are_audited_and_the_same_model_passes(models, capsys):
    assert _gate_models(models, "same.onnx", "--work", str(models / "work")) == 0
    out = capsys.readouterr().out
    assert out.startswith("## faceaudit gate: PASSED") and out.count("| pass |") == 5  # dataset + 4 lines
    assert (models / "work" / "baseline" / "audit.json").is_file() and (models / "work" / "candidate" / "audit.json").is_file()


def test_a_model_looking_elsewhere_fails_the_cms_drift_lines(models, capsys):
    # The planted region moved from columns 20-27 to 4-11: the CMS's mass moves about 16 px.
    assert _gate_models(models, "moved.onnx", "--junit", str(models / "gate.xml")) == 1
    cases = {c.get("name"): c.find("failure") is None for c in ET.parse(models / "gate.xml").getroot().iter("testcase")}
    assert cases["cms.overall emd"] is False and cases["cms.overall one_minus_correlation"] is False
    assert cases["dataset.manifest_sha256"] is True
    emd_px = float(re.search(r"emd ([0-9.]+) px", capsys.readouterr().out).group(1))
    assert 12 < emd_px < 20
    assert not (models / "work").exists()  # without --work the audits lived in a temporary folder
