"""Verdicts of each rule kind on hand-made audits, against hand-computed expectations."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.gate.audits import load_audit
from faceaudit.gate.compare import compare
from faceaudit.gate.policy import load_policy, parse_policy
from tests.gate.audits import DELETE, audit_data, point_map, write_audit
from tests.gate.test_policy import EXAMPLE


def _gate(tmp_path, rules: str, baseline=None, candidate=None, maps_b=None, maps_c=None, same_dataset=False):
    b = load_audit(write_audit(tmp_path / "b", baseline, maps_b), "baseline")
    c = load_audit(write_audit(tmp_path / "c", candidate, maps_c), "candidate")
    policy = parse_policy(f"same_dataset: {str(same_dataset).lower()}\nrules:\n{rules}")
    return compare(b, c, policy)


def _verdicts(result):
    return {check.name: check.passed for check in result.checks}


HIDING = "  - metric: games.hiding_game.summary.ebp.auc_accuracy\n    better: higher\n"


@pytest.mark.parametrize("limits, candidate, passed", [
    ("max_drop: 0.05", 0.76, True),  # drop 0.04
    ("max_drop: 0.05", 0.74, False),  # drop 0.06
    ("max_drop: 0.0", 0.8, True),  # identical numbers pass a zero tolerance
    ("max_drop: 0.0", 0.9, True),  # an improvement is no drop
    ("max_relative_drop: 0.1", 0.73, True),  # 0.07 / 0.8 = 0.0875
    ("max_relative_drop: 0.1", 0.71, False),  # 0.09 / 0.8 = 0.1125
    ("max_drop: 0.02", 0.78, True),  # exactly at the limit: 0.8 − 0.78 is 0.020000000000000018 in floats
    ("max_relative_drop: 0.05", 0.76, True),  # exactly at the limit, 0.04 / 0.8
    ("max_drop: 0.02", 0.7799, False),  # just past it
    ("min: 0.75", 0.74, False),
    ("max: 0.85", 0.9, False),
])
def test_metric_higher_is_better(tmp_path, limits, candidate, passed):
    result = _gate(tmp_path, HIDING + f"    {limits}\n",
                   candidate=audit_data(**{"games.hiding_game.summary.ebp.auc_accuracy": candidate}))
    (check,) = result.checks
    assert check.passed is passed and result.passed is passed
    assert check.baseline == 0.8 and check.candidate == candidate


def test_metric_lower_is_better_counts_a_rise_as_the_drop(tmp_path):
    rule = "  - metric: games.deletion.summary.ebp.auc\n    better: lower\n    max_drop: 0.05\n"
    worse = _gate(tmp_path / "1", rule, candidate=audit_data(**{"games.deletion.summary.ebp.auc": 0.26}))
    better = _gate(tmp_path / "2", rule, candidate=audit_data(**{"games.deletion.summary.ebp.auc": 0.05}))
    assert not worse.passed and "drop 0.06 > max_drop 0.05" in worse.checks[0].detail
    assert better.passed and "drop -0.15" in better.checks[0].detail


def test_a_zero_baseline_makes_any_worsening_an_infinite_relative_drop(tmp_path):
    rule = "  - metric: games.deletion.summary.ebp.auc\n    better: lower\n    max_relative_drop: 10\n"
    zero = audit_data(**{"games.deletion.summary.ebp.auc": 0.0})
    assert not _gate(tmp_path / "1", rule, zero, audit_data(**{"games.deletion.summary.ebp.auc": 1e-6})).passed
    assert _gate(tmp_path / "2", rule, zero, zero).passed


def test_wildcards_expand_over_both_audits_and_skip_excluded_keys(tmp_path):
    candidate = audit_data(**{"games.hiding_game.summary.rise.auc_accuracy": 0.6,  # drop 0.1
                              "games.hiding_game.summary.gradcam": {"auc_accuracy": 0.9},  # new: no baseline
                              "games.hiding_game.summary.random.auc_accuracy": 0.1})  # excluded
    rule = ("  - metric: games.*.summary.*.auc_accuracy\n    exclude: [random]\n    better: higher\n"
            "    max_drop: 0.05\n")
    result = _gate(tmp_path, rule, candidate=candidate)
    assert _verdicts(result) == {"games.hiding_game.summary.ebp.auc_accuracy": True,
                                 "games.hiding_game.summary.gradcam.auc_accuracy": False,
                                 "games.hiding_game.summary.rise.auc_accuracy": False}
    assert result.checks[1].detail == "the baseline audit has no games.hiding_game.summary.gradcam.auc_accuracy"


def test_missing_or_non_numeric_values_fail_with_a_message_instead_of_crashing(tmp_path):
    rules = (HIDING + "    max_drop: 0.1\n"
             "  - metric: games.pointing_game.summary.*.hit_rate\n    min: 0.5\n"
             "  - metric: games.deletion.summary.ebp.auc\n    max: 1\n")
    candidate = audit_data(**{"games.hiding_game.summary.ebp.auc_accuracy": None,
                              "games.deletion.summary.ebp": DELETE})
    result = _gate(tmp_path, rules, candidate=candidate)
    details = [check.detail for check in result.checks]
    assert [check.passed for check in result.checks] == [False, False, False]
    assert details == ["the candidate audit's games.hiding_game.summary.ebp.auc_accuracy is not a number: None",
                       "the candidate audit has no games.pointing_game.summary.*.hit_rate",
                       "the candidate audit has no games.deletion.summary.ebp.auc"]


def test_bounds_alone_do_not_need_the_baseline_number(tmp_path):
    baseline = audit_data(**{"games.deletion": DELETE})
    result = _gate(tmp_path, "  - metric: games.deletion.summary.ebp.auc\n    max: 0.25\n", baseline=baseline)
    assert result.passed and result.checks[0].baseline is None and result.checks[0].candidate == 0.2


def test_cms_drift_emd_is_the_pixels_the_mass_moved(tmp_path):
    rule = "  - cms_drift: overall\n    measure: emd\n    max: {}\n"
    moved = {"maps/cms.npy": point_map((16, 16), (4, 7))}  # baseline's mass is at (4, 4): 3 px
    assert not _gate(tmp_path / "1", rule.format(2.5), maps_c=moved).passed
    result = _gate(tmp_path / "2", rule.format(3), maps_c=moved)
    assert result.passed and result.checks[0].detail == "emd 3 px <= max 3 px"
    assert _gate(tmp_path / "3", rule.format(0)).passed  # identical maps


def test_cms_drift_of_a_group_map_by_correlation(tmp_path):
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    maps_b, maps_c = {"maps/cms_b.npy": a}, {"maps/cms_b.npy": np.array([[1.0, 3.0], [2.0, 4.0]])}  # 1 − r = 0.2
    rule = "  - cms_drift: b\n    measure: one_minus_correlation\n    max: {}\n"
    assert _gate(tmp_path / "1", rule.format(0.21), maps_b=maps_b, maps_c=maps_c).passed
    failed = _gate(tmp_path / "2", rule.format(0.19), maps_b=maps_b, maps_c=maps_c)
    assert not failed.passed and failed.checks[0].name == "cms.groups.b one_minus_correlation"


def test_cms_drift_fails_for_a_missing_group_a_constant_map_or_another_grid(tmp_path):
    rule = "  - cms_drift: {}\n    measure: one_minus_correlation\n    max: 2\n"
    missing = _gate(tmp_path / "1", rule.format("c"))
    constant = _gate(tmp_path / "2", rule.format("overall"), maps_c={"maps/cms.npy": np.ones((16, 16))})
    grid = _gate(tmp_path / "3", rule.format("overall"), maps_c={"maps/cms.npy": point_map((8, 8), (1, 1))})
    assert not (missing.passed or constant.passed or grid.passed)
    assert missing.checks[0].detail == "the baseline audit has no cms.groups.c"
    assert "constant" in constant.checks[0].detail and "16x16 vs 8x8" in grid.checks[0].detail


def test_unreadable_map_files_are_errors_naming_the_side_and_key(tmp_path):
    rule = "  - cms_drift: overall\n    measure: emd\n    max: 1\n"
    with pytest.raises(InvalidRequest) as caught:
        _gate(tmp_path / "1", rule, candidate=audit_data(**{"cms.overall.file": "maps/nothing.npy"}))
    assert caught.value.field == "candidate.cms.overall.file"
    with pytest.raises(InvalidRequest, match="outside the audit's folder"):
        _gate(tmp_path / "2", rule, baseline=audit_data(**{"cms.overall.file": "../c/maps/cms.npy"}))
    with pytest.raises(InvalidRequest, match="not a finite 2-D map"):
        _gate(tmp_path / "3", rule, maps_c={"maps/cms.npy": np.zeros((2, 2, 2))})


@pytest.mark.parametrize("limits, gap_b, gap_c, passed", [
    ("max: 0.3", 0.1, 0.3, True),
    ("max: 0.3", 0.1, 0.31, False),
    ("max_increase: 0.05", 0.1, 0.14, True),
    ("max_increase: 0.05", 0.1, 0.16, False),
    ("max_increase: 0.05", 0.3, 0.05, True),  # a narrower gap
])
def test_group_gap_ceiling_and_increase(tmp_path, limits, gap_b, gap_c, passed):
    key = "cms.group_differences.a_vs_b.l1"
    result = _gate(tmp_path, f"  - group_gap: all\n    measure: l1\n    {limits}\n",
                   baseline=audit_data(**{key: gap_b}), candidate=audit_data(**{key: gap_c}))
    assert _verdicts(result) == {"a_vs_b l1": passed}


def test_group_gap_pairs_missing_on_either_side_fail(tmp_path):
    candidate = audit_data(**{"cms.group_differences": {"a_vs_c": {"one_minus_correlation": 0.0, "l1": 0.0}}})
    result = _gate(tmp_path / "1", "  - group_gap: all\n    measure: l1\n    max_increase: 1\n", candidate=candidate)
    assert _verdicts(result) == {"a_vs_b l1": False, "a_vs_c l1": False}
    assert [c.detail for c in result.checks] == ["the candidate audit has no cms.group_differences.a_vs_b.l1",
                                                 "the baseline audit has no cms.group_differences.a_vs_c.l1"]
    ungrouped = audit_data(**{"cms.group_differences": {}, "dataset.group_column": None})
    none = _gate(tmp_path / "2", "  - group_gap: all\n    measure: l1\n    max: 1\n", ungrouped, ungrouped)
    assert not none.passed and "group column" in none.checks[0].detail


def test_same_dataset_check_and_option_notes(tmp_path):
    other = audit_data(**{"dataset.manifest_sha256": "ef" * 32, "options": {"seed": 1}})
    rule = "  - metric: games.deletion.summary.ebp.auc\n    max: 1\n"
    result = _gate(tmp_path / "1", rule, candidate=other, same_dataset=True)
    assert [c.passed for c in result.checks] == [False, True] and "different datasets" in result.checks[0].detail
    assert result.notes == ("the audits ran with different options: seed",)
    assert _gate(tmp_path / "2", rule, same_dataset=True).passed
    unknown = _gate(tmp_path / "3", rule, candidate=audit_data(**{"dataset.manifest_sha256": DELETE}),
                    same_dataset=True)
    assert unknown.checks[0].detail == "the candidate audit records no dataset.manifest_sha256"


def test_an_identical_audit_passes_and_a_planted_regression_fails_the_example_policy(tmp_path):
    policy = load_policy(EXAMPLE)
    data = audit_data(**{"games.confidence": {"summary": {"ebp": {"win_pct": 60.0}, "rise": {"win_pct": 40.0}}},
                         "games.deletion.summary": {"ebp": {"auc_normalised": 0.2}, "rise": {"auc_normalised": 0.3}}})
    wide = {"maps/cms.npy": np.outer(np.hanning(16), np.hanning(16)) + 0.01}
    baseline = load_audit(write_audit(tmp_path / "b", data, wide), "baseline")
    same = compare(baseline, load_audit(write_audit(tmp_path / "same", data, wide), "candidate"), policy)
    assert same.passed, [c for c in same.checks if not c.passed]
    regressed = copy.deepcopy(data)
    regressed["games"]["hiding_game"]["summary"]["ebp"]["auc_accuracy"] = 0.7  # planted: 0.8 -> 0.7
    moved = {"maps/cms.npy": np.roll(wide["maps/cms.npy"], 5, axis=1)}
    result = compare(baseline, load_audit(write_audit(tmp_path / "bad", regressed, moved), "candidate"), policy)
    failed = {(c.rule, c.name) for c in result.checks if not c.passed}
    assert failed == {("hiding game AUC", "games.hiding_game.summary.ebp.auc_accuracy"),
                      ("CMS drift (EMD)", "cms.overall emd"), ("CMS drift (correlation)", "cms.overall one_minus_correlation")}


def test_a_dotted_path_reaches_keys_with_dots_in_them(tmp_path):
    """Inpainting summaries hold sr_at_far_0.05: the plain dotted path finds it."""
    baseline, candidate = audit_data(), audit_data()
    for data, value in ((baseline, 0.6), (candidate, 0.5)):
        data["games"]["inpainting_game"] = {"summary": {"gradient": {"sr_at_far_0.05": value}}}
    rule = "  - metric: games.inpainting_game.summary.gradient.sr_at_far_0.05\n    better: higher\n    max_drop: 0.05\n"
    (check,) = _gate(tmp_path, rule, baseline=baseline, candidate=candidate).checks
    assert not check.passed and check.baseline == 0.6 and check.candidate == 0.5
