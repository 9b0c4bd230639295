"""JUnit XML and Markdown renderings of a verdict: one test case / row per check, failures marked."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from faceaudit.gate.compare import Check, GateResult
from faceaudit.gate.junit import junit_xml
from faceaudit.gate.summary import markdown_summary

RESULT = GateResult(
    checks=(
        Check("same dataset", "dataset.manifest_sha256", True, None, None, "equal", "manifest sha256 cdcd"),
        Check("hiding <AUC> & co", "games.hiding_game.summary.ebp.auc_accuracy", False, 0.8, 0.7,
              "drop <= 0.05 (higher is better)", "drop 0.1 > max_drop 0.05"),
        Check("hiding <AUC> & co", "games.hiding_game.summary.rise.auc_accuracy", True, 0.7, 0.7,
              "drop <= 0.05 (higher is better)", "drop 0"),
        Check("gap | pipes", "a_vs_b l1", False, None, 0.4, "<= 0.3", "gap 0.4 > max 0.3"),
    ),
    baseline="base.onnx (sha256 abab)", candidate="cand.onnx (sha256 efef)", policy="policy.yaml",
    notes=("the audits ran with different options: seed",),
)


def test_junit_has_one_testcase_per_check_and_marks_the_failures():
    root = ET.fromstring(junit_xml(RESULT))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [(c.rule, c.name) for c in RESULT.checks]
    assert [c.find("failure") is not None for c in cases] == [False, True, False, True]
    assert suite.get("tests") == root.get("tests") == "4" and suite.get("failures") == "2"
    failure = cases[1].find("failure")
    assert failure.get("message") == "drop 0.1 > max_drop 0.05"
    assert "baseline: 0.8\ncandidate: 0.7" in failure.text
    assert {p.get("name"): p.get("value") for p in suite.find("properties")}["candidate"] == "cand.onnx (sha256 efef)"


def test_markdown_lists_every_check_with_its_verdict_and_escapes_pipes():
    text = markdown_summary(RESULT)
    assert text.startswith("## faceaudit gate: FAILED (2 of 4 checks)\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4
    assert [row.startswith("| ✅ pass") for row in rows] == [True, False, True, False]
    assert "| 0.8 | 0.7 |" in rows[1] and "gap \\| pipes" in rows[3]
    assert all(row.count(" | ") == 6 for row in rows)  # the escaped pipe did not add a column
    assert "> note: the audits ran with different options: seed" in text


def test_a_passing_verdict_says_so():
    passed = GateResult(checks=RESULT.checks[:1], baseline="b", candidate="c", policy="p")
    assert markdown_summary(passed).startswith("## faceaudit gate: PASSED\n")
    assert ET.fromstring(junit_xml(passed)).find("testsuite").get("failures") == "0"
