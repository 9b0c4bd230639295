"""Markdown summary of a verdict: the verdict, every check as a row, notes."""

from __future__ import annotations

from faceaudit.gate.compare import GateResult
from faceaudit.gate.summary import markdown_summary
from tests.gate.verdicts import RESULT


def test_markdown_lists_every_check_with_its_verdict_and_escapes_pipes():
    text = markdown_summary(RESULT)
    assert text.startswith("## faceaudit gate: FAILED (2 of 4 checks)\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4
    assert [row.startswith("| pass |") for row in rows] == [True, False, True, False]
    assert "| 0.8 | 0.7 |" in rows[1] and "gap \\| pipes" in rows[3]
    assert all(row.count(" | ") == 6 for row in rows)  # the escaped pipe did not add a column
    assert "> note: the audits ran with different options: seed" in text


def test_a_passing_verdict_says_so():
    passed = GateResult(checks=RESULT.checks[:1], baseline="b", candidate="c", policy="p")
    assert markdown_summary(passed).startswith("## faceaudit gate: PASSED\n")
