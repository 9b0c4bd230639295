"""Policy files: what a valid one becomes, and errors naming the key path and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.gate.policy import CmsDriftRule, GroupGapRule, MetricRule, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "gate-policy.example.yaml"

VALID = """\
version: 1
audit:
  methods: [ebp, rise]
  games: [hiding_game]
rules:
  - metric: games.hiding_game.summary.*.auc_accuracy
    better: higher
    max_drop: 0.02
    max_relative_drop: 0.05
    min: -1
  - name: drift
    cms_drift: overall
    measure: emd
    max: 2
  - group_gap: [a_vs_b]
    measure: l1
    max_increase: 0.1
  - metric: [games, "odd.key", value]
    max: 3
"""


def test_a_valid_policy_becomes_typed_rules():
    policy = parse_policy(VALID)
    metric, drift, gap, dotted = policy.rules
    assert metric == MetricRule(name="games.hiding_game.summary.*.auc_accuracy",
                                path=("games", "hiding_game", "summary", "*", "auc_accuracy"), better="higher",
                                max_drop=0.02, max_relative_drop=0.05, min=-1.0)
    assert drift == CmsDriftRule(name="drift", map="overall", measure="emd", max=2.0)
    assert gap == GroupGapRule(name="group_gap a_vs_b l1", pairs=("a_vs_b",), measure="l1", max_increase=0.1)
    assert dotted.path == ("games", "odd.key", "value") and dotted.better is None
    assert policy.same_dataset is True and policy.audit == {"methods": ["ebp", "rise"], "games": ["hiding_game"]}


def test_the_shipped_example_policy_is_valid():
    policy = load_policy(EXAMPLE)
    kinds = {type(rule) for rule in policy.rules}
    assert kinds == {MetricRule, CmsDriftRule, GroupGapRule}


def _error(text: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_policy(text, source="p.yaml")
    return caught.value


@pytest.mark.parametrize("text, field, line, words", [
    (VALID.replace("max_drop: 0.02", "max_dorp: 0.02"), "policy.rules[0].max_dorp", 8, "unknown key"),
    (VALID.replace("max_drop: 0.02", "max_drop: lots"), "policy.rules[0].max_drop", 8, "non-negative number"),
    (VALID.replace("max_drop: 0.02", "max_drop: -0.1"), "policy.rules[0].max_drop", 8, "non-negative number"),
    (VALID.replace("better: higher", "better: up"), "policy.rules[0].better", 7, "'higher', 'lower'"),
    (VALID.replace("    better: higher\n", ""), "policy.rules[0].better", None, "which way is a drop"),
    (VALID.replace("measure: emd", "measure: kl"), "policy.rules[1].measure", 13, "'emd'"),
    (VALID.replace("    max: 2\n", ""), "policy.rules[1]", 11, "needs 'max'"),
    (VALID.replace("    max_increase: 0.1\n", ""), "policy.rules[2]", 15, "'max' and/or 'max_increase'"),
    (VALID.replace("group_gap: [a_vs_b]", "group_gap: some"), "policy.rules[2].group_gap", 15, "'all' or a list"),
    (VALID.replace("  - name: drift\n", "  - name: drift\n    metric: x.y\n"), "policy.rules[1]", 11,
     "exactly one of"),
    (VALID.replace("  - metric: [games", "  - exclude: [random]\n    metric: [games"), "policy.rules[3].exclude", 18,
     "'*' segment"),
    (VALID.replace("version: 1", "version: 2"), "policy.version", 1, "only version 1"),
    (VALID.replace("  games: [hiding_game]", "  games: hiding_game"), "policy.audit.games", 4, "list of names"),
    (VALID.replace("    min: -1\n", "    min: 5\n    max: 1\n"), "policy.rules[0].min", 10, "above max"),
    (VALID + "  - name: drift\n    cms_drift: overall\n    measure: emd\n    max: 1\n", "policy.rules[4].name", 20,
     "used twice"),
    (VALID.replace("version: 1", "version: 1\nrules: []"), "policy.rules", 6, "given twice (first on line 2)"),
    ("rules:\n  - cms_drift: overall\n    measure: emd\n    max: 1\n  - cms_drift: overall\n    measure: emd\n"
     "    max: 2\n", "policy.rules[1]", 5, "used twice"),
    ("rules: []\n", "policy.rules", 1, "at least one rule"),
    ("just text\n", "policy", 1, "must be a mapping"),
    ("", "policy", None, "must be a mapping"),
])
def test_errors_name_the_key_and_its_line(text, field, line, words):
    error = _error(text)
    assert error.field == field and words in str(error)
    if line is not None:
        assert f"p.yaml line {line}:" in str(error)


def test_yaml_syntax_errors_and_unreadable_files_name_the_policy(tmp_path):
    assert _error("rules: [\n").field == "policy"
    with pytest.raises(InvalidRequest, match="cannot read") as caught:
        load_policy(tmp_path / "missing.yaml")
    assert caught.value.field == "policy"


def test_nested_aliases_are_read_in_linear_time():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 9)]  # 10^9 leaves if expanded
    text = "audit:\n  options:\n" + "".join(f"    {line}\n" for line in levels) + "rules:\n  - metric: a.b\n    max: 1\n"
    policy = parse_policy(text)
    assert len(policy.audit["options"]["a8"]) == 10
