"""Map distances against hand-computed cases and independent formulations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.stats import wasserstein_distance

from faceaudit.errors import InvalidRequest
from faceaudit.gate.drift import emd, one_minus_correlation, unit_mass
from tests.gate.audits import point_map


@pytest.mark.parametrize("k", [1, 3, 7])
def test_a_point_mass_moved_by_k_pixels_has_emd_k(k):
    result = emd(point_map((12, 12), (2, 2)), point_map((12, 12), (2, 2 + k)))
    assert result.distance_px == pytest.approx(k, abs=1e-9) and result.pool == 1 and result.bound_px == 0
    assert emd(point_map((12, 12), (2, 2)), point_map((12, 12), (2 + k, 2))).distance_px == pytest.approx(k, abs=1e-9)


def test_a_diagonal_move_costs_its_city_block_length_and_scale_does_not_matter():
    a, b = point_map((10, 10), (1, 2)), 5.0 * point_map((10, 10), (4, 6))
    assert emd(a, b).distance_px == pytest.approx(3 + 4, abs=1e-9)


def test_identical_maps_have_zero_emd():
    values = np.random.default_rng(0).random((9, 7))
    assert emd(values, 3 * values).distance_px == pytest.approx(0.0, abs=1e-9)


def test_one_row_maps_match_the_one_dimensional_wasserstein_distance():
    rng = np.random.default_rng(1)
    a, b = rng.random(15), rng.random(15)
    positions = np.arange(15)
    expected = wasserstein_distance(positions, positions, a, b)  # scipy normalises the weights itself
    assert emd(a[None], b[None]).distance_px == pytest.approx(expected, rel=1e-7)


def test_grid_flow_equals_the_full_transport_problem_with_city_block_costs():
    rng = np.random.default_rng(2)
    a, b = rng.random((4, 5)), rng.random((4, 5))
    a[1, 2] = -3.0  # negative evidence carries no mass
    pa, pb = unit_mass(a), unit_mass(b)
    ys, xs = np.divmod(np.arange(20), 5)
    cost = np.abs(ys[:, None] - ys[None]) + np.abs(xs[:, None] - xs[None])
    rows = np.kron(np.eye(20), np.ones(20))  # Σ_j T_ij = pa_i
    cols = np.kron(np.ones(20), np.eye(20))  # Σ_i T_ij = pb_j
    exact = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([pa.ravel(), pb.ravel()]),
                    bounds=(0, None), method="highs").fun
    assert emd(a, b).distance_px == pytest.approx(exact, rel=1e-7)
    assert pa[1, 2] == 0.0 and pa.sum() == pytest.approx(1.0)


def test_pooled_emd_is_within_its_reported_bound_of_the_exact_one():
    rng = np.random.default_rng(3)
    a, b = rng.random((20, 20)) ** 4, rng.random((20, 20)) ** 4
    exact = emd(a, b).distance_px
    pooled = emd(a, b, max_side=7)  # 20 px -> 3 px cells
    assert pooled.pool == 3 and pooled.bound_px == 4.0
    assert abs(pooled.distance_px - exact) <= pooled.bound_px
    moved = emd(point_map((20, 20), (1, 1)), point_map((20, 20), (1, 13)), max_side=10)
    assert moved.pool == 2 and moved.distance_px == pytest.approx(12.0, abs=1e-9)  # cells 0 -> 6, 2 px each


def test_one_minus_correlation_hand_computed():
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 3.0], [2.0, 4.0]])
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): covariance 4 / sqrt(5 * 5) = 0.8
    assert one_minus_correlation(a, b) == pytest.approx(0.2)
    assert one_minus_correlation(a, 2 * a + 7) == pytest.approx(0.0, abs=1e-12)
    assert one_minus_correlation(a, -a) == pytest.approx(2.0)


def test_undefined_measures_are_errors_naming_the_field():
    with pytest.raises(InvalidRequest, match="constant") as caught:
        one_minus_correlation(np.ones((3, 3)), np.eye(3), field="cms.overall")
    assert caught.value.field == "cms.overall"
    with pytest.raises(InvalidRequest, match="no positive values"):
        emd(-np.ones((3, 3)), np.eye(3))
    with pytest.raises(InvalidRequest, match="same shape"):
        emd(np.eye(3), np.eye(4))
    with pytest.raises(InvalidRequest, match="NaN"):
        one_minus_correlation(np.full((2, 2), np.nan), np.eye(2))
