"""The gate's policy file: which numbers of two audits are compared, and how far they may move.

A policy is YAML (or JSON, which is YAML). It only reads the file it is given. Example (the full
commented one is deploy/gate-policy.example.yaml):

    version: 1
    same_dataset: true              # both audits must have run on the same manifest (sha256)
    audit: {methods: [ebp], games: [hiding_game], group_column: group}   # run_audit's, for a model
    rules:
      - metric: games.hiding_game.summary.*.auc_accuracy   # '*' = every key, in either audit
        exclude: [random]           # keys '*' skips
        better: higher              # or lower: then a "drop" is a rise of the number
        max_drop: 0.02              # absolute worsening allowed vs the baseline
        max_relative_drop: 0.05     # worsening / |baseline|
        min: 0.5                    # absolute floor of the candidate (max: a ceiling)
      - cms_drift: overall          # or a group value: distance between the two audits' CMS maps
        measure: emd                # emd (pixels) | one_minus_correlation
        max: 2.0
      - group_gap: all              # or a list of "<a>_vs_<b>" pairs of the audit's group differences
        measure: one_minus_correlation   # | l1, read from the audits
        max: 0.3                    # ceiling of the candidate's gap
        max_increase: 0.05          # candidate gap - baseline gap

Each rule's kind is the one of `metric`, `cms_drift`, `group_gap` it names. Every error names the
key as a path (`policy.rules[2].max_drop`) and the line of the file it is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faceaudit.errors import InvalidRequest

__all__ = ["CmsDriftRule", "GroupGapRule", "MetricRule", "Policy", "Rule", "load_policy", "parse_policy"]

DRIFT_MEASURES = ("emd", "one_minus_correlation")
GAP_MEASURES = ("one_minus_correlation", "l1")
DIRECTIONS = ("higher", "lower")
MAX_POLICY_BYTES = 1 << 20


@dataclass(frozen=True)
class MetricRule:
    """A number of the audit addressed by its path; '*' segments expand over the keys present."""

    name: str
    path: tuple[str, ...]
    exclude: tuple[str, ...] = ()  # keys '*' skips, e.g. the "random" baseline series
    better: str | None = None  # "higher" | "lower"; required by max_drop / max_relative_drop
    max_drop: float | None = None
    max_relative_drop: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class CmsDriftRule:
    """Distance between the baseline's and the candidate's CMS map (overall, or of one group)."""

    name: str
    map: str  # "overall" or a group value
    measure: str
    max: float


@dataclass(frozen=True)
class GroupGapRule:
    """The candidate's group-difference numbers (audit cms.group_differences), capped and vs baseline."""

    name: str
    pairs: tuple[str, ...] | None  # None: every pair either audit has
    measure: str
    max: float | None = None
    max_increase: float | None = None


Rule = MetricRule | CmsDriftRule | GroupGapRule


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    same_dataset: bool = True
    audit: dict[str, Any] = field(default_factory=dict)  # run_audit's methods, games, options, group_column
    source: str = "policy"


_KINDS = {
    "metric": {"name", "metric", "exclude", "better", "max_drop", "max_relative_drop", "min", "max"},
    "cms_drift": {"name", "cms_drift", "measure", "max"},
    "group_gap": {"name", "group_gap", "measure", "max", "max_increase"},
}
_TOP = {"version", "same_dataset", "audit", "rules"}
_AUDIT = {"methods", "games", "options", "group_column"}


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (InvalidRequest naming 'policy' and the key on failure)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_POLICY_BYTES:
            raise InvalidRequest("policy", f"{path} is larger than {MAX_POLICY_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest("policy", f"cannot read {path}: {exc}") from exc
    return parse_policy(text, source=str(path))


def parse_policy(text: str, *, source: str = "policy") -> Policy:
    """Validate policy YAML text; errors name the key path and the line it is on."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise InvalidRequest("policy", f"{source} is not valid YAML: {exc}") from exc
    lines: dict[str, int] = {}
    if node is not None:
        _index_lines(node, "policy", lines, source, set())
    return _Reader(lines, source).policy(data)


def _index_lines(node: yaml.Node, path: str, lines: dict[str, int], source: str, seen_nodes: set[int]) -> None:
    """Record the 1-based line of every key path; duplicate keys are an error (YAML keeps the last).

    Each node is walked once: an alias repeats a node, and walking repeats would let a small file
    of nested aliases take exponential time (the paths under an alias get no line).
    """
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen:
                raise InvalidRequest(f"{path}.{name}", f"{source} line {line}: key given twice (first on line {seen[name]})")
            seen[name] = line
            _index_lines(value, f"{path}.{name}", lines, source, seen_nodes)
            lines[f"{path}.{name}"] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, f"{path}[{i}]", lines, source, seen_nodes)


class _Reader:
    """Turns the loaded YAML into a Policy, raising errors that carry the key path and line."""

    def __init__(self, lines: dict[str, int], source: str) -> None:
        self.lines = lines
        self.source = source

    def error(self, path: str, message: str) -> InvalidRequest:
        line = self.lines.get(path)
        where = f"{self.source} line {line}" if line else self.source
        return InvalidRequest(path, f"{where}: {message}")

    def policy(self, data: Any) -> Policy:
        mapping = self.mapping(data, "policy", _TOP)
        if mapping.get("version", 1) != 1:
            raise self.error("policy.version", f"only version 1 is known, got {mapping['version']!r}")
        same = mapping.get("same_dataset", True)
        if not isinstance(same, bool):
            raise self.error("policy.same_dataset", f"must be true or false, got {same!r}")
        audit = self.mapping(mapping.get("audit", {}), "policy.audit", _AUDIT)
        for key in ("methods", "games"):
            if key in audit:
                self.names(audit[key], f"policy.audit.{key}")
        if "options" in audit:
            self.mapping(audit["options"], "policy.audit.options", None)
        if "group_column" in audit and (not isinstance(audit["group_column"], str) or not audit["group_column"]):
            raise self.error("policy.audit.group_column", f"must be a column name, got {audit['group_column']!r}")
        raw_rules = mapping.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            raise self.error("policy.rules" if "rules" in mapping else "policy",
                             "needs 'rules': a list of at least one rule")
        rules = tuple(self.rule(raw, f"policy.rules[{i}]") for i, raw in enumerate(raw_rules))
        names = [rule.name for rule in rules]
        for i, name in enumerate(names):
            if names.index(name) != i:
                where = f"policy.rules[{i}]" + (".name" if "name" in raw_rules[i] else "")
                raise self.error(where, f"rule name {name!r} is used twice (give each rule a distinct 'name'); "
                                        f"names identify the tests in the JUnit report")
        return Policy(rules=rules, same_dataset=same, audit=dict(audit), source=self.source)

    def rule(self, raw: Any, path: str) -> Rule:
        if not isinstance(raw, dict):
            raise self.error(path, f"a rule is a mapping with one of {sorted(_KINDS)}, got {type(raw).__name__}")
        kinds = [k for k in _KINDS if k in raw]
        if len(kinds) != 1:
            raise self.error(path, f"a rule names exactly one of {sorted(_KINDS)}, got {kinds or 'none'}")
        kind = kinds[0]
        self.mapping(raw, path, _KINDS[kind])
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise self.error(f"{path}.name", f"must be a non-empty string, got {name!r}")
        if kind == "metric":
            return self.metric_rule(raw, path, name)
        if kind == "cms_drift":
            target = raw["cms_drift"]
            if not isinstance(target, str) or not target:
                raise self.error(f"{path}.cms_drift", f"'overall' or a group value, got {target!r}")
            measure = self.choice(raw, path, "measure", DRIFT_MEASURES)
            limit = self.number(raw, path, "max", required=True)
            return CmsDriftRule(name=name or f"cms_drift {target} {measure}", map=target, measure=measure, max=limit)
        pairs = raw["group_gap"]
        if pairs == "all":
            chosen = None
        else:
            chosen = tuple(self.names(pairs, f"{path}.group_gap", "'all' or a list of '<a>_vs_<b>' pairs"))
        measure = self.choice(raw, path, "measure", GAP_MEASURES)
        limit, increase = self.number(raw, path, "max"), self.number(raw, path, "max_increase")
        if limit is None and increase is None:
            raise self.error(path, "a group_gap rule needs 'max' and/or 'max_increase'")
        label = "all" if chosen is None else ",".join(chosen)
        return GroupGapRule(name=name or f"group_gap {label} {measure}", pairs=chosen, measure=measure, max=limit,
                            max_increase=increase)

    def metric_rule(self, raw: dict[str, Any], path: str, name: str | None) -> MetricRule:
        where = raw["metric"]
        if isinstance(where, str):
            parts = tuple(where.split("."))
        elif isinstance(where, list):
            parts = tuple(where)  # a list of keys, for keys that contain dots
        else:
            parts = ()
        if not parts or not all(isinstance(p, str) and p for p in parts):
            raise self.error(f"{path}.metric", f"a dotted path such as games.hiding_game.summary.ebp.auc_accuracy "
                                               f"(or a list of keys), got {where!r}")
        exclude = tuple(self.names(raw["exclude"], f"{path}.exclude")) if "exclude" in raw else ()
        if exclude and "*" not in parts:
            raise self.error(f"{path}.exclude", "only a path with a '*' segment has keys to exclude")
        better = raw.get("better")
        if better is not None and better not in DIRECTIONS:
            raise self.error(f"{path}.better", f"one of {list(DIRECTIONS)}, got {better!r}")
        values = {key: self.number(raw, path, key, signed=key in ("min", "max"))
                  for key in ("max_drop", "max_relative_drop", "min", "max")}
        if all(v is None for v in values.values()):
            raise self.error(path, "a metric rule needs at least one of max_drop, max_relative_drop, min, max")
        if better is None and (values["max_drop"] is not None or values["max_relative_drop"] is not None):
            raise self.error(f"{path}.better", "max_drop and max_relative_drop need 'better: higher' or "
                                               "'better: lower' (which way is a drop)")
        if values["min"] is not None and values["max"] is not None and values["min"] > values["max"]:
            raise self.error(f"{path}.min", f"min {values['min']} is above max {values['max']}")
        return MetricRule(name=name or ".".join(parts), path=parts, exclude=exclude, better=better, **values)

    def mapping(self, value: Any, path: str, allowed: set[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {key!r}")
            if allowed is not None and key not in allowed:
                raise self.error(f"{path}.{key}", f"unknown key; allowed here: {sorted(allowed)}")
        return value

    def names(self, value: Any, path: str, what: str = "a list of names") -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(path, f"must be {what}, got {value!r}")
        return value

    def choice(self, raw: dict[str, Any], path: str, key: str, allowed: tuple[str, ...]) -> str:
        if key not in raw:
            raise self.error(path, f"needs '{key}': one of {list(allowed)}")
        if raw[key] not in allowed:
            raise self.error(f"{path}.{key}", f"one of {list(allowed)}, got {raw[key]!r}")
        return raw[key]

    def number(self, raw: dict[str, Any], path: str, key: str, *, required: bool = False,
               signed: bool = False) -> float | None:
        """A finite number; non-negative unless `signed` (absolute bounds of a metric may be negative)."""
        if key not in raw:
            if required:
                raise self.error(path, f"needs '{key}'")
            return None
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (value < 0 and not signed):
            kind = "finite number" if signed else "finite non-negative number"
            raise self.error(f"{path}.{key}", f"must be a {kind}, got {value!r}")
        return float(value)
