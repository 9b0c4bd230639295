"""The gate's verdict as JUnit XML, so CI systems list every policy line as a test (pure; no files).

Layout (the subset GitHub, GitLab and Jenkins read): one <testsuite name="faceaudit gate">, one
<testcase classname=RULE name=CHECK> per check, a <failure message=...> child for a failing one,
and the baseline, candidate and limit in <system-out>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from faceaudit.gate.compare import Check, GateResult

__all__ = ["junit_xml"]


def junit_xml(result: GateResult) -> str:
    suites = ET.Element("testsuites", name="faceaudit gate", tests=str(len(result.checks)),
                        failures=str(result.failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name="faceaudit gate", tests=str(len(result.checks)),
                          failures=str(result.failures), errors="0", skipped="0", time="0")
    properties = ET.SubElement(suite, "properties")
    for key, value in (("baseline", result.baseline), ("candidate", result.candidate), ("policy", result.policy)):
        ET.SubElement(properties, "property", name=key, value=value)
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname=check.rule, name=check.name, time="0")
        if not check.passed:
            ET.SubElement(case, "failure", message=check.detail, type="PolicyViolation").text = _describe(check)
        ET.SubElement(case, "system-out").text = _describe(check)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _describe(check: Check) -> str:
    return (f"baseline: {_value(check.baseline)}\ncandidate: {_value(check.candidate)}\n"
            f"limit: {check.limit}\n{check.detail}")


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
