"""Pixel ranks, counts, masks, blends and areas against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.metrics.ordering import blend, curve_area, pixel_counts, pixel_ranks, soft_mask, taken


def test_ranks_order_pixels_by_value_in_both_directions() -> None:
    values = np.array([[0.3, 0.1], [0.4, 0.2]])
    assert pixel_ranks(values, descending=False, seed=0, index=0).tolist() == [[2, 0], [3, 1]]
    assert pixel_ranks(values, descending=True, seed=0, index=0).tolist() == [[1, 3], [0, 2]]


def test_ties_go_in_one_seeded_random_order_after_the_values() -> None:
    values = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    for seed in range(20):
        down = pixel_ranks(values, descending=True, seed=seed, index=3).ravel()
        up = pixel_ranks(values, descending=False, seed=seed, index=3).ravel()
        # values first: the ones (raster 0, 2, 4) take ranks 0..2 going down, 3..5 going up
        assert sorted(down[[0, 2, 4]]) == [0, 1, 2] and sorted(up[[0, 2, 4]]) == [3, 4, 5]
        # one tie order for both directions: tied pixels keep their relative order
        assert np.array_equal(np.argsort(down[[0, 2, 4]]), np.argsort(up[[0, 2, 4]]))
        assert np.array_equal(np.argsort(down[[1, 3, 5]]), np.argsort(up[[1, 3, 5]]))
    # reproducible for (seed, index), different for another image or seed
    flat = np.zeros((8, 8))
    first = pixel_ranks(flat, descending=True, seed=1, index=0)
    assert np.array_equal(first, pixel_ranks(flat, descending=True, seed=1, index=0))
    assert not np.array_equal(first, pixel_ranks(flat, descending=True, seed=1, index=1))
    assert not np.array_equal(first, pixel_ranks(flat, descending=True, seed=2, index=0))


def test_a_flat_map_has_no_positional_bias() -> None:
    # Over many seeds every pixel of a constant 4×4 map goes first equally often (100 of 1600 each;
    # binomial sd ≈ 9.7) and the top rows' mean rank is the bottom rows' (raster order: 3.5 vs 11.5).
    ranks = np.stack([pixel_ranks(np.zeros((4, 4)), descending=True, seed=s, index=0) for s in range(1600)])
    firsts = (ranks == 0).sum(axis=0)
    assert firsts.sum() == 1600 and np.all(np.abs(firsts - 100) < 45)
    top, bottom = ranks[:, :2].astype(float).mean(), ranks[:, 2:].astype(float).mean()
    assert top == pytest.approx(7.5, abs=0.2) and bottom == pytest.approx(7.5, abs=0.2)


def test_ranks_use_a_small_dtype_that_holds_every_rank() -> None:
    assert pixel_ranks(np.zeros((16, 16)), descending=False, seed=0, index=0).dtype == np.uint8
    ranks = pixel_ranks(np.arange(300 * 300.0).reshape(300, 300), descending=True, seed=0, index=0)
    assert ranks.dtype == np.uint32 and ranks.max() == 300 * 300 - 1 and ranks[0, 0] == 300 * 300 - 1


def test_counts_round_half_up() -> None:
    # 0.125·4 = 0.5 → 1 and 0.625·4 = 2.5 → 3 (numpy's half-to-even would give 0 and 2)
    assert pixel_counts(np.array([0.0, 0.125, 0.625, 0.99, 1.0]), 4).tolist() == [0, 1, 3, 4, 4]
    assert pixel_counts(np.array([0.99]), 1024).tolist() == [1014]


def test_taken_marks_the_first_pixels_of_the_order() -> None:
    ranks = pixel_ranks(np.array([[0.3, 0.1], [0.4, 0.2]]), descending=True, seed=0, index=0)
    assert taken(ranks, 0).sum() == 0
    assert taken(ranks, 2).tolist() == [[True, False], [True, False]]
    assert taken(ranks, 4).all()


def test_soft_mask_keeps_empty_and_full_masks_and_spreads_an_edge() -> None:
    empty, full = np.zeros((1, 5, 5), bool), np.ones((1, 5, 5), bool)
    assert np.array_equal(soft_mask(empty, 1.0), np.zeros((1, 5, 5)))
    np.testing.assert_allclose(soft_mask(full, 1.0), 1.0, rtol=0, atol=1e-6)
    half = np.zeros((1, 1, 8), bool)
    half[..., 4:] = True
    row = soft_mask(half, 1.0)[0, 0]
    assert 0 < row[3] < 0.5 < row[4] < 1  # pixels next to the edge are partly filled
    assert np.all(np.diff(row) >= 0)
    np.testing.assert_allclose(row[3] + row[4], 1.0, atol=1e-6)  # symmetric about the edge


def test_blend_copies_exactly_with_a_hard_mask_and_mixes_with_a_soft_one() -> None:
    base = np.full((1, 1, 2, 3), 10.0, np.float32)
    fill = np.full((1, 1, 2, 3), 250.0, np.float32)
    hard = blend(base, fill, np.array([[[True, False]]]))
    assert hard[0, 0, 0].tolist() == [250.0] * 3 and hard[0, 0, 1].tolist() == [10.0] * 3
    soft = blend(base, fill, np.array([[[0.25, 1.0]]], np.float32))
    assert soft[0, 0, 0].tolist() == [70.0] * 3 and soft[0, 0, 1].tolist() == [250.0] * 3


def test_curve_area_is_the_trapezoid_area_over_the_x_span() -> None:
    assert curve_area([0, 0.5, 1], [1, 0, 1]) == pytest.approx(0.5)
    # [0, 0.75] span: (1 + 1)/2·0.25 + (1 + 1)/2·0.25 + (1 + 0)/2·0.25 = 0.625, / 0.75
    assert curve_area([0, 0.25, 0.5, 0.75], [1, 1, 1, 0]) == pytest.approx(0.625 / 0.75)
    with pytest.raises(ValueError):
        curve_area([0.5], [1])
    with pytest.raises(ValueError):
        curve_area([0.5, 0.5], [1, 1])
