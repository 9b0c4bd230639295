"""JUnit XML of a verdict: parses, one test case per check, failures marked with their detail."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from faceaudit.gate.compare import GateResult
from faceaudit.gate.junit import junit_xml
from tests.gate.verdicts import RESULT


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


def test_a_passing_verdict_has_no_failures():
    passed = GateResult(checks=RESULT.checks[:1], baseline="b", candidate="c", policy="p")
    assert ET.fromstring(junit_xml(passed)).find("testsuite").get("failures") == "0"
