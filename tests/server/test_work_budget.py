"""The forward-pass budget of one request, counted by hand on small plans."""

from __future__ import annotations

import pytest

from faceaudit.errors import LimitExceeded
from faceaudit.server.work_budget import PassBudget


def reports() -> tuple[list[tuple[int, int, str]], object]:
    seen: list[tuple[int, int, str]] = []
    return seen, lambda done, total, phase: seen.append((done, total, phase))


def test_the_first_report_refuses_the_request_the_estimate_puts_over_the_limit():
    seen, then = reports()
    budget = PassBudget(1199, ["rise"] * 4, "images, targets", "options")
    with pytest.raises(LimitExceeded, match=r"^images, targets: 4 maps would take about 1,200 forward passes"):
        budget.progress(0, then)(100, 300, "rise")  # 300 for this map + 3 × 300 for the others
    assert seen == []  # refused before the report went on


def test_at_the_limit_every_map_runs_and_reports_go_on():
    seen, then = reports()
    budget = PassBudget(1200, ["rise"] * 4, "images, targets", "options")
    for k in range(4):
        budget.progress(k, then)(150, 300, "rise")
        budget.progress(k, then)(300, 300, "rise")
        budget.finished(k, 300)
    assert seen == [(150, 300, "rise"), (300, 300, "rise")] * 4


def test_one_map_over_the_limit_names_the_field_of_its_options():
    budget = PassBudget(100, ["rise"], "images, targets", "options")
    with pytest.raises(LimitExceeded, match=r"^options: one rise map takes 200 forward passes; this server allows 100"):
        budget.progress(0, lambda *_: None)(10, 200, "rise")


def test_maps_of_other_methods_cost_what_their_method_announced():
    # items × [gradient, rise]: gradient reports nothing and runs 1 pass, rise announces 1000
    def second_map_reports(limit: int) -> None:
        budget = PassBudget(limit, ["gradient", "rise"] * 3, "items, methods", "methods")
        budget.finished(0, 1)  # 1 + 2 gradient maps × 1 (rise not announced yet: 0) = 3
        budget.progress(1, lambda *_: None)(50, 1000, "rise")  # 1 + 1000 + 2 × 1 + 2 × 1000 = 3003

    second_map_reports(3003)
    with pytest.raises(LimitExceeded, match=r"^items, methods: 6 maps would take about 3,003"):
        second_map_reports(3002)


def test_a_finished_map_counts_what_it_ran_not_what_it_announced():
    def second_map_announces_more(limit: int) -> None:
        budget = PassBudget(limit, ["cis"] * 3, "images, targets", "options")
        report = budget.progress(0, lambda *_: None)
        report(100, 1000, "cis")  # 1000 + 2 × 1000 = 3000
        report(400, 1000, "cis: converged")
        budget.finished(0, 400)  # ran 400 of at most 1000
        budget.progress(1, lambda *_: None)(10, 1500, "cis")  # 400 spent + 1500 + 1 × 1500 = 3400

    second_map_announces_more(3400)
    with pytest.raises(LimitExceeded, match="about 3,400"):  # counting the first map's 1000 would say 4,000
        second_map_announces_more(3399)


def test_a_map_that_reports_no_progress_announces_what_it_ran():
    PassBudget(1200, ["gradient"] * 3, "images, targets", "options").finished(0, 400)  # 400 + 2 × 400
    with pytest.raises(LimitExceeded, match="about 1,200"):
        PassBudget(1199, ["gradient"] * 3, "images, targets", "options").finished(0, 400)


def test_without_a_limit_nothing_is_refused():
    budget = PassBudget(None, ["rise"] * 64, "images, targets", "options")
    budget.progress(0, lambda *_: None)(1, 10**6, "rise")
    budget.finished(0, 10**6)
