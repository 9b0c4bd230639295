"""Judging a candidate audit against a baseline audit under a policy: one Check per policy line.

Reads the two audits (and their map files) and nothing else. A rule becomes one or more checks: a
metric path with '*' segments expands over the keys either audit has, a group_gap rule over the
pairs. Anything the policy asks for that an audit lacks is a failing check saying what is missing,
never a crash; an audit whose files cannot be read is an InvalidRequest (the gate exits 2).

Conventions (numbers are compared exactly as stored, with no hidden tolerance):
    metric   worsening w = baseline − candidate (better: higher) or candidate − baseline (lower);
             fails if w > max_drop, or w / |baseline| > max_relative_drop (a baseline of 0 with
             w > 0 counts as an infinite relative drop), or candidate < min, or candidate > max.
             A rule with only min/max does not need the baseline's number.
    cms_drift  drift = one_minus_correlation or emd (faceaudit.gate.drift) between the baseline's
             and the candidate's map; fails if drift > max, or if the maps differ in shape.
    group_gap  gap = the candidate audit's cms.group_differences[pair][measure]; fails if gap > max
             or gap − baseline gap > max_increase.
    same_dataset  fails unless dataset.manifest_sha256 is the same in both audits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from faceaudit.errors import InvalidRequest
from faceaudit.gate.audits import Audit
from faceaudit.gate.drift import emd, one_minus_correlation
from faceaudit.gate.policy import CmsDriftRule, GroupGapRule, MetricRule, Policy, Rule

__all__ = ["Check", "GateResult", "compare"]


@dataclass(frozen=True)
class Check:
    """One line of the verdict: one JUnit test case, one row of the Markdown table."""

    rule: str  # the policy rule's name
    name: str  # what was checked: the concrete path, map or group pair
    passed: bool
    baseline: float | None
    candidate: float | None
    limit: str  # the policy's limits, in words
    detail: str  # what was measured and, for a failure, which limit it broke


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...]
    baseline: str  # describe() of each audit, for headers
    candidate: str
    policy: str
    notes: tuple[str, ...] = ()  # things worth knowing that are not policy lines

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> int:
        return sum(not check.passed for check in self.checks)


def compare(baseline: Audit, candidate: Audit, policy: Policy) -> GateResult:
    checks: list[Check] = []
    if policy.same_dataset:
        checks.append(_same_dataset(baseline, candidate))
    for rule in policy.rules:
        checks.extend(_checks(rule, baseline, candidate))
    return GateResult(checks=tuple(checks), baseline=baseline.describe(), candidate=candidate.describe(),
                      policy=policy.source, notes=_notes(baseline, candidate))


def _checks(rule: Rule, baseline: Audit, candidate: Audit) -> list[Check]:
    if isinstance(rule, MetricRule):
        return [_metric(rule, path, baseline, candidate) for path in _expand(rule.path, rule.exclude, baseline, candidate)]
    if isinstance(rule, CmsDriftRule):
        return [_cms_drift(rule, baseline, candidate)]
    return _group_gaps(rule, baseline, candidate)


_MISSING = object()


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    """The value at `path`; a key with dots in it (sr_at_far_0.05) matches the segments a dotted path split it into."""
    if not path:
        return data
    if not isinstance(data, dict):
        return _MISSING
    for taken in range(1, len(path) + 1):
        key = ".".join(path[:taken])
        if key in data:
            found = _lookup(data[key], path[taken:])
            if found is not _MISSING:
                return found
    return _MISSING


def _expand(pattern: tuple[str, ...], exclude: tuple[str, ...], baseline: Audit, candidate: Audit
            ) -> list[tuple[str, ...]]:
    """Concrete paths for a pattern: '*' takes every key either audit has there, except `exclude`.

    Expanded paths that neither audit holds are dropped (a '*' over games need not hit a game
    without that summary); if nothing is left the pattern itself is returned, to fail as missing.
    """
    if "*" not in pattern:
        return [pattern]
    paths: list[tuple[str, ...]] = [()]
    for key in pattern:
        grown = []
        for prefix in paths:
            if key != "*":
                grown.append((*prefix, key))
                continue
            nodes = [_lookup(audit.data, prefix) for audit in (baseline, candidate)]
            keys = sorted({k for node in nodes if isinstance(node, dict) for k in node} - set(exclude))
            grown.extend((*prefix, k) for k in keys)
        paths = grown
    held = [p for p in paths if any(_lookup(a.data, p) is not _MISSING for a in (baseline, candidate))]
    return held or [pattern]


def _ulps(*values: float) -> float:
    """Room for float subtraction at a limit: 0.8 − 0.78 is 0.020000000000000018, a drop of exactly 0.02."""
    return 1e-12 * max([1.0, *(abs(v) for v in values if math.isfinite(v))])


def _number(audit: Audit, path: tuple[str, ...]) -> tuple[float | None, str | None]:
    """(value, None), or (None, why it is not usable)."""
    value = _lookup(audit.data, path)
    if value is _MISSING:
        return None, f"the {audit.side} audit has no {'.'.join(path)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"the {audit.side} audit's {'.'.join(path)} is not a number: {value!r}"[:300]
    if not math.isfinite(value):
        return None, f"the {audit.side} audit's {'.'.join(path)} is {value}"
    return float(value), None


def _metric(rule: MetricRule, path: tuple[str, ...], baseline: Audit, candidate: Audit) -> Check:
    limits = []
    if rule.max_drop is not None:
        limits.append(f"drop <= {rule.max_drop:g}")
    if rule.max_relative_drop is not None:
        limits.append(f"relative drop <= {rule.max_relative_drop:.4g}")
    if rule.min is not None:
        limits.append(f">= {rule.min:g}")
    if rule.max is not None:
        limits.append(f"<= {rule.max:g}")
    limit = "; ".join(limits) + (f" ({rule.better} is better)" if rule.better else "")
    name = ".".join(path)
    new, missing_new = _number(candidate, path)
    old, missing_old = _number(baseline, path)
    needs_baseline = rule.max_drop is not None or rule.max_relative_drop is not None
    problems = [m for m in (missing_old if needs_baseline else None, missing_new) if m]
    if problems:
        return Check(rule.name, name, False, old, new, limit, "; ".join(problems))
    failed, measured = [], []
    if needs_baseline:
        worse = old - new if rule.better == "higher" else new - old
        measured.append(f"drop {worse:.4g}")
        if rule.max_drop is not None and worse > rule.max_drop + _ulps(old, new):
            failed.append(f"drop {worse:.4g} > max_drop {rule.max_drop:g}")
        if rule.max_relative_drop is not None:
            relative = worse / abs(old) if old != 0 else (math.inf if worse > 0 else 0.0)
            measured.append(f"relative drop {relative:.4g}")
            if relative > rule.max_relative_drop + _ulps(relative):
                failed.append(f"relative drop {relative:.4g} > max_relative_drop {rule.max_relative_drop:.4g}")
    if rule.min is not None and new < rule.min:
        failed.append(f"candidate {new:.4g} < min {rule.min:g}")
    if rule.max is not None and new > rule.max:
        failed.append(f"candidate {new:.4g} > max {rule.max:g}")
    detail = "; ".join(failed) if failed else ", ".join(measured) or f"candidate {new:.4g}"
    return Check(rule.name, name, not failed, old, new, limit, detail)


def _cms_drift(rule: CmsDriftRule, baseline: Audit, candidate: Audit) -> Check:
    keys = ("cms", "overall") if rule.map == "overall" else ("cms", "groups", rule.map)
    name = f"{'.'.join(keys)} {rule.measure}"
    unit = " px" if rule.measure == "emd" else ""
    limit = f"<= {rule.max:g}{unit}"
    for audit in (baseline, candidate):
        if not isinstance(_lookup(audit.data, keys), dict):
            return Check(rule.name, name, False, None, None, limit, f"the {audit.side} audit has no {'.'.join(keys)}")
    old, new = baseline.map(keys), candidate.map(keys)
    if old.shape != new.shape:
        return Check(rule.name, name, False, None, None, limit,
                     f"maps differ in shape ({old.shape[0]}x{old.shape[1]} vs {new.shape[0]}x{new.shape[1]}): "
                     f"drift is only defined on the same canonical grid")
    try:
        if rule.measure == "emd":
            result = emd(old, new, field=name)
            drift = result.distance_px
            note = f" (pooled {result.pool}x, within {result.bound_px:g} px of exact)" if result.pool > 1 else ""
        else:
            drift, note = one_minus_correlation(old, new, field=name), ""
    except InvalidRequest as exc:  # a constant or empty map: the measure is undefined, the line fails
        return Check(rule.name, name, False, None, None, limit, str(exc))
    verdict = ">" if drift > rule.max else "<="
    detail = f"{rule.measure} {drift:.4g}{unit} {verdict} max {rule.max:g}{unit}{note}"
    return Check(rule.name, name, drift <= rule.max, None, None, limit, detail)


def _group_gaps(rule: GroupGapRule, baseline: Audit, candidate: Audit) -> list[Check]:
    where = ("cms", "group_differences")
    pairs = rule.pairs
    if pairs is None:
        nodes = [_lookup(audit.data, where) for audit in (baseline, candidate)]
        pairs = tuple(sorted({k for node in nodes if isinstance(node, dict) for k in node}))
    limits = ([f"<= {rule.max:g}"] if rule.max is not None else []) + \
             ([f"increase <= {rule.max_increase:g}"] if rule.max_increase is not None else [])
    limit = "; ".join(limits)
    if not pairs:
        return [Check(rule.name, "cms.group_differences", False, None, None, limit,
                      "neither audit has group differences (was the dataset audited with a group column?)")]
    checks = []
    for pair in pairs:
        path = (*where, pair, rule.measure)
        new, missing_new = _number(candidate, path)
        old, missing_old = _number(baseline, path)
        failed = [missing_new] if missing_new else []
        if new is not None and rule.max is not None and new > rule.max:
            failed.append(f"gap {new:.4g} > max {rule.max:g}")
        if rule.max_increase is not None:
            if missing_old:
                failed.append(missing_old)
            elif new is not None and new - old > rule.max_increase:
                failed.append(f"increase {new - old:.4g} > max_increase {rule.max_increase:g}")
        if failed:
            detail = "; ".join(failed)
        else:
            detail = f"gap {new:.4g}" + (f", increase {new - old:.4g}" if old is not None else "")
        checks.append(Check(rule.name, f"{pair} {rule.measure}", not failed, old, new, limit, detail))
    return checks


def _same_dataset(baseline: Audit, candidate: Audit) -> Check:
    path = ("dataset", "manifest_sha256")
    old, new = (_lookup(audit.data, path) for audit in (baseline, candidate))
    if old is _MISSING or new is _MISSING or not old or not new:
        side = baseline if old is _MISSING or not old else candidate
        return Check("same dataset", "dataset.manifest_sha256", False, None, None, "equal",
                     f"the {side.side} audit records no dataset.manifest_sha256")
    same = old == new
    detail = f"manifest sha256 {str(new)[:12]}" if same else \
        f"audits ran on different datasets (manifest sha256 {str(old)[:12]} vs {str(new)[:12]})"
    return Check("same dataset", "dataset.manifest_sha256", same, None, None, "equal", detail)


def _notes(baseline: Audit, candidate: Audit) -> tuple[str, ...]:
    old, new = baseline.data.get("options"), candidate.data.get("options")
    if isinstance(old, dict) and isinstance(new, dict) and old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return (f"the audits ran with different options: {', '.join(keys)}",)
    return ()
