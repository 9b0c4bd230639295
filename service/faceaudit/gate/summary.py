"""The gate's verdict as Markdown for CI logs and job summaries (pure; no files).

A heading with the verdict, the two models and the policy, then one table row per check (every
policy line, passing or not), then notes. Cell text is escaped so '|' in a name cannot break the table;
the verdict marks are plain ASCII so that a console in a legacy code page (Windows CI) can print them.
"""

from __future__ import annotations

from faceaudit.gate.compare import GateResult

__all__ = ["markdown_summary"]


def markdown_summary(result: GateResult) -> str:
    verdict = "PASSED" if result.passed else f"FAILED ({result.failures} of {len(result.checks)} checks)"
    lines = [
        f"## faceaudit gate: {verdict}",
        "",
        f"- baseline: {_cell(result.baseline)}",
        f"- candidate: {_cell(result.candidate)}",
        f"- policy: `{result.policy}`",
        "",
        "| result | rule | check | baseline | candidate | limit | detail |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for check in result.checks:
        mark = "pass" if check.passed else "**FAIL**"
        cells = [mark, check.rule, f"`{check.name}`", _number(check.baseline), _number(check.candidate),
                 check.limit, check.detail]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if result.notes:
        lines += ["", *(f"> note: {_cell(note)}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
