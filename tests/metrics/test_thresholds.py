"""τ from a false positive rate: hand-counted lists, ties, decimal rates, and the minimality of τ."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.metrics.thresholds import threshold_at_fpr


def test_tau_lets_exactly_the_allowed_impostors_pass_and_reports_the_tpr() -> None:
    impostors = [0.3, 0.9, 0.1, 0.7, 1.0, 0.5, 0.2, 0.8, 0.4, 0.6]  # 10 scores, shuffled
    found = threshold_at_fpr(impostors, 0.2, genuine_scores=[0.79, 0.8, 0.81, 0.95])
    # k = 2 false positives allowed: 1.0 and 0.9 pass, 0.8 (the third highest) is the first rejected.
    assert 0.8 < found.tau <= 0.8 + 1e-15
    assert found.achieved_fpr == 0.2 and found.impostors == 10
    assert found.tpr == 0.5 and found.genuine == 4  # 0.81 and 0.95 reach τ; 0.8 ties the rejected impostor
    assert threshold_at_fpr(impostors, 0.2).tpr is None


def test_ties_at_the_cut_are_all_rejected_so_the_rate_stays_below_the_request() -> None:
    found = threshold_at_fpr([0.5, 0.5, 0.5, 0.1], 0.5)  # 2 allowed, but three impostors tie at 0.5
    assert found.tau > 0.5 and found.achieved_fpr == 0.0
    found = threshold_at_fpr([0.9, 0.5, 0.5, 0.1], 0.5)
    assert found.achieved_fpr == 0.25


def test_the_rate_is_read_as_the_decimal_written() -> None:
    impostors = np.arange(100) / 100  # 0.00 … 0.99
    assert np.floor(0.29 * 100) == 28  # the float product would allow one false positive too few
    found = threshold_at_fpr(impostors, 0.29)
    assert found.achieved_fpr == 0.29 and 0.70 < found.tau < 0.71


@pytest.mark.parametrize("seed", range(5))
def test_tau_is_the_smallest_float_with_at_most_the_allowed_false_positives(seed: int) -> None:
    rng = np.random.default_rng(seed)
    impostors = np.round(rng.uniform(-1, 1, 200), 2)  # rounded: many ties
    fpr = float(rng.choice([0.005, 0.01, 0.05, 0.1, 0.37]))
    allowed = int(np.floor(round(fpr * 200, 9)))
    tau = threshold_at_fpr(impostors, fpr).tau
    assert np.count_nonzero(impostors >= tau) <= allowed
    assert np.count_nonzero(impostors >= np.nextafter(tau, -np.inf)) > allowed  # one float lower is too many


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"impostor_scores": [0.1] * 50, "fpr": 0.01}, "fpr", "below 1/50"),
    ({"impostor_scores": [0.1] * 50, "fpr": 0.0}, "fpr", "between 0 and 1"),
    ({"impostor_scores": [0.1] * 50, "fpr": 1.0}, "fpr", "between 0 and 1"),
    ({"impostor_scores": [0.1] * 50, "fpr": float("nan")}, "fpr", "finite"),
    ({"impostor_scores": [0.1] * 50, "fpr": True}, "fpr", "finite number"),
    ({"impostor_scores": [], "fpr": 0.1}, "impostor_scores", "at least one"),
    ({"impostor_scores": [0.1, float("inf")], "fpr": 0.5}, "impostor_scores", "finite"),
    ({"impostor_scores": [[0.1, 0.2]], "fpr": 0.5}, "impostor_scores", "list of scores"),
    ({"impostor_scores": ["a"], "fpr": 0.5}, "impostor_scores", "numbers"),
    ({"impostor_scores": [0.1, 0.2], "fpr": 0.5, "genuine_scores": [float("nan")]}, "genuine_scores", "finite"),
])
def test_bad_input_names_the_field(kwargs: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        threshold_at_fpr(**kwargs)
    assert caught.value.field == field and words in str(caught.value)


@pytest.mark.parametrize("fpr", [1 - 1e-10, 1 - 1e-12, np.nextafter(1.0, 0.0)])
def test_a_rate_just_below_one_lets_all_but_the_lowest_impostor_pass(fpr: float) -> None:
    # α < 1 allows at most n − 1 of n false positives: τ just above the lowest impostor, 0.1
    found = threshold_at_fpr([0.3, 0.9, 0.1, 0.7, 1.0, 0.5, 0.2, 0.8, 0.4, 0.6], fpr)
    assert 0.1 < found.tau <= 0.1 + 1e-15 and found.achieved_fpr == 0.9


@pytest.mark.parametrize("n", [3, 6, 7, 12, 30, 56])
def test_one_over_n_written_as_a_float_allows_one_impostor(n: int) -> None:
    """float(1/12) = 0.08333…33 is below 1/12 as a decimal; it still means one false positive in 12."""
    threshold = threshold_at_fpr(np.arange(n, dtype=np.float64), 1.0 / n)
    assert threshold.achieved_fpr == pytest.approx(1.0 / n)
    assert threshold.tau > n - 2 and threshold.tau <= n - 1  # only the highest impostor passes
