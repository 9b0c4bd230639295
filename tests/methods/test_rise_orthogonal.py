"""RISE's orthogonal mask design (issue 8): block structure, exact maps of additive scores,
unbiasedness against expectations enumerated over every grid, and early stopping by whole blocks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from onnx import numpy_helper
from scipy import ndimage
from scipy.linalg import hadamard

from faceaudit.engine.scorer import ClassTarget, Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.corr_rise import CorrRiseOptions, corr_rise
from faceaudit.methods.rise import (
    RiseOptions, WeightedMaskSum, accumulate, block_size, orthogonal_blocks, rise, rise_masks,
)
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_rise import all_masks, run_onnx

Z_BOUND = 4.5  # |z| bound for a few dozen statistics: P(any |z| > 4.5) ≤ 50 · 2Φ(−4.5) ≈ 3e-4 under the null


def blocks(seed: int, cells: int, count: int, cell: int = 3) -> list:
    return list(itertools.islice(orthogonal_blocks(np.random.default_rng(seed), cells, cell, cell), count))


def upsampled(grid: np.ndarray, height: int, width: int, dy: int, dx: int) -> np.ndarray:
    """The reference's mask of one grid (skimage resize = scipy zoom, mirror, grid_mode), cropped at (dy, dx)."""
    cells = grid.shape[0]
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    zoom = ((cells + 1) * cell_h / cells, (cells + 1) * cell_w / cells)
    up = ndimage.zoom(grid.astype(np.float64), zoom, order=1, mode="mirror", grid_mode=True)
    return up[dy : dy + height, dx : dx + width]


# --- the design ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cells", [1, 3, 7, 8])
def test_a_block_is_signed_hadamard_columns_balanced_and_orthogonal(cells):
    n = block_size(cells)
    assert n >= cells * cells + 1 and n & (n - 1) == 0 and n < 2 * (cells * cells + 1)
    block = blocks(4, cells, 1)[0]
    grids = block.grids(0, n)
    expected = hadamard(n)[block.order][:, block.columns] * np.where(block.flips == 1, -1, 1) > 0
    np.testing.assert_array_equal(grids, expected)
    assert len(set(block.columns.tolist())) == cells * cells and block.columns.min() >= 1  # distinct, non-constant
    centred = grids - 0.5
    np.testing.assert_array_equal(grids.sum(axis=0), np.full(cells * cells, n // 2))  # balanced
    np.testing.assert_array_equal(centred.T @ centred, n / 4 * np.eye(cells * cells))  # orthogonal
    np.testing.assert_array_equal(block.grids(5, 9), grids[5:9])  # any rows of the block, alone


def test_a_partial_block_is_a_random_subset_of_rows():
    # In Hadamard order the first n/2 rows agree on columns j and j ⊕ n/2 (up to sign), and column
    # n/2 is constant on them: a run of half a block would move two cells together and never vary
    # a third. The block's rows are shuffled, so a prefix has no constant, equal or complementary
    # columns (for 32 random rows of 64 that would need odds of 1 in C(64, 32)).
    for block in blocks(3, 7, 20):
        half = block.grids(0, 32).astype(np.int64)
        assert (half.sum(axis=0) % 32 != 0).all()
        same = (half.T @ half + (1 - half).T @ (1 - half))[np.triu_indices(49, 1)]
        assert ((same != 0) & (same != 32)).all()


def test_each_mask_alone_has_independent_fair_cells():
    # One row per block (a random row of it) over many blocks: each cell kept with probability ½,
    # every pair of cells kept together with probability ¼ (independence), as a RISE grid.
    cells, count = 3, 4000
    rows = np.array([b.grids(0, 1)[0] for b in blocks(1, cells, count)], np.float64)
    rate = rows.mean(axis=0)
    assert np.abs(rate - 0.5).max() < Z_BOUND * math.sqrt(0.25 / count)
    both = (rows.T @ rows / count)[np.triu_indices(cells * cells, 1)]
    assert np.abs(both - 0.25).max() < Z_BOUND * math.sqrt(0.25 * 0.75 / count)


def test_the_masks_are_the_block_grids_upsampled_at_one_shift_per_block():
    # The shift of block b is floor(frac(u0[b mod 2] + ⌊b/2⌋·α)·C), u0 the generator's first four uniforms
    # (one start for the even blocks, one for the odd: the two halves of early stopping) and
    # α = (1/φ, 1/φ²), φ the real root of x³ = x + 1 (the R2 sequence).
    height, width, cells, count = 20, 24, 7, 150
    masks = np.concatenate(list(rise_masks(np.random.default_rng(2), count, cells, 0.5, height, width, 50,
                                           design="orthogonal")))
    phi = max(root.real for root in np.roots([1, 0, -1, -1]) if abs(root.imag) < 1e-12)
    starts = np.random.default_rng(2).random((2, 2))
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    n = block_size(cells)
    for b, block in enumerate(blocks(2, cells, math.ceil(count / n), cell=0)):
        u = (starts[b % 2] + (b // 2) * np.array([1 / phi, 1 / phi**2])) % 1.0
        dy, dx = int(u[0] * cell_h), int(u[1] * cell_w)
        grids = block.grids(0, min(n, count - b * n)).reshape(-1, cells, cells)
        for i, grid in enumerate(grids):
            np.testing.assert_allclose(masks[b * n + i], upsampled(grid, height, width, dy, dx), atol=1e-6)


def test_each_block_shift_is_uniform_and_a_run_covers_the_shifts_evenly():
    # Uniform: the shift of block 3 over many seeds (the random start u0 rotates the sequence).
    # Even: each half's first 16 shifts (even blocks, odd blocks: two sequences) fall 4 ± 2 in each
    # quadrant of an 8×8 shift square, where independent uniform shifts miss that bound in about 2
    # runs out of 5.
    shifts = np.array([[blk.dy, blk.dx] for seed in range(2000) for blk in blocks(seed, 2, 4, cell=5)[3:]])
    counts = np.bincount(shifts[:, 0] * 5 + shifts[:, 1], minlength=25)
    chi2 = ((counts - 80) ** 2 / 80).sum()
    assert chi2 < 60  # 24 degrees of freedom: P(χ² > 60) ≈ 6e-5
    for seed in range(100):
        first = blocks(seed, 2, 32, cell=8)
        for half in (first[0::2], first[1::2]):
            quadrants = np.zeros((2, 2), int)
            for blk in half:
                quadrants[blk.dy // 4, blk.dx // 4] += 1
            assert np.abs(quadrants - 4).max() <= 2, (seed, quadrants)


@pytest.mark.parametrize("cells", [3, 7])
def test_masks_do_not_depend_on_the_chunk_size(cells):
    def masks(chunk: int) -> np.ndarray:
        return all_masks(5, 300, cells, 0.5, 16, 12, chunk=chunk, design="orthogonal")

    reference = masks(64)
    for chunk in (1, 7, 100, 1000):
        np.testing.assert_array_equal(masks(chunk), reference)
    assert not np.array_equal(all_masks(6, 300, cells, 0.5, 16, 12, design="orthogonal"), reference)
    assert abs(reference.mean() - 0.5) < 0.01


# --- the maps ------------------------------------------------------------------------------------


def test_whole_blocks_give_the_exact_map_of_an_additive_score(faces):
    # Image side = cells: one shift only (C = 1), and a linear model with the zero fill gives
    # s = b + Σ_c γ_c·g_c with γ_c = W·(I ⊙ w_c), w_c the mask of cell c alone. Then
    # Cov(s, M(λ))/p = ½ Σ_c γ_c·w_c(λ), and every whole block gives exactly that map.
    cells = 4
    proto = zoo.linear_classifier(height=cells, width=cells, classes=3, seed=2)
    model = prepared(proto, {"kind": "classifier"})
    image = faces(1, cells, cells)[0]
    run = run_onnx(proto)
    units = np.eye(cells * cells).reshape(-1, cells, cells)
    weights = np.array([upsampled(unit, cells, cells, 0, 0) for unit in units])  # w_c
    gamma = run(image[None] * weights[..., None])[:, 1] - run(np.zeros((1, cells, cells, 3)))[0, 1]
    expected = 0.5 * np.tensordot(gamma, weights, axes=1)
    n = block_size(cells)

    def values(masks: int, seed: int, design: str) -> np.ndarray:
        options = RiseOptions(masks=masks, cells=cells, seed=seed, design=design, chunk=13)
        return rise(model, image=image, target=ExplainTarget(class_index=1), options=options).values

    for masks, seed in [(n, 0), (n, 1), (3 * n, 2)]:
        np.testing.assert_allclose(values(masks, seed, "orthogonal"), expected, rtol=1e-4, atol=1e-5 * np.ptp(expected))
    independent = values(3 * n, 2, "independent")
    assert np.abs(independent - expected).max() > 0.05 * np.ptp(expected)  # Monte Carlo noise: not exact


def softmax_classifier(cells: int):
    """A linear classifier with logits ×20 under softmax: strongly non-additive in the mask
    (an additive fit leaves about half the scores' spread over the 2^9 grids of 3×3 cells)."""
    proto = zoo.linear_classifier(height=cells, width=cells, classes=3, seed=1)
    for tensor in proto.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 20, tensor.name))
    run = run_onnx(proto)

    def score(images: np.ndarray) -> np.ndarray:
        logits = run(images)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True))[:, 0]

    return proto, score


@pytest.mark.parametrize(("design", "masks"), [("orthogonal", 5), ("orthogonal", 16), ("orthogonal", 24),
                                               ("independent", 16)])
def test_centred_maps_are_unbiased_on_a_non_additive_model(faces, design, masks):
    # Image side = cells = 3: one shift, 512 equally likely grids, so E[S_c] = Cov(s, M(λ))/p is
    # computed exactly by enumeration. The mean of many runs' maps (the estimator's own running
    # sums) must match it at every pixel; with orthogonal blocks (n = 16: a partial block, one,
    # one and a half) the Bessel divisor N − 1 would be biased, and is rejected by the same test.
    cells, runs = 3, 2000
    _, score = softmax_classifier(cells)
    image = faces(1, cells, cells)[0]
    grids = np.array(list(itertools.product([0.0, 1.0], repeat=cells * cells))).reshape(-1, cells, cells)
    every = np.array([upsampled(grid, cells, cells, 0, 0) for grid in grids])
    scores = score(image[None] * every[..., None])
    expected = np.tensordot(scores - scores.mean(), every - every.mean(axis=0), axes=1) / len(grids) / 0.5
    additive = np.c_[np.ones(len(grids)), grids.reshape(len(grids), -1)]
    residual = scores - additive @ np.linalg.lstsq(additive, scores, rcond=None)[0]
    assert residual.std() > 0.3 * scores.std()  # the model is far from additive

    block = block_size(cells) if design == "orthogonal" else 1
    drawn = np.stack([all_masks(k, masks, cells, 0.5, cells, cells, design=design) for k in range(runs)])
    drawn_scores = score(image[None] * drawn.reshape(-1, cells, cells)[..., None]).reshape(runs, masks)
    maps = []
    for run_masks, run_scores in zip(drawn, drawn_scores):
        sums = WeightedMaskSum(cells, cells, block=block)
        sums.add(run_masks, run_scores)
        maps.append(sums.saliency(0.5, "centred"))
    maps = np.array(maps)
    error = maps.std(axis=0, ddof=1) / math.sqrt(runs)
    assert np.abs((maps.mean(axis=0) - expected) / error).max() < Z_BOUND
    if design == "orthogonal" and masks >= 16:  # the test has power: Bessel's N − 1 is off by ≈ 1/(n − 1)
        n, last = masks, masks % 16
        divisor = n - 1 + (n // 16 * 16 * 15 + last * (last - 1)) / (n * 15)
        bessel = maps * divisor / (masks - 1)
        assert np.abs((bessel.mean(axis=0) - expected) / (error * divisor / (masks - 1))).max() > Z_BOUND


def test_whole_blocks_make_the_centred_map_the_paper_map_minus_the_mean_score(faces):
    # Over whole blocks every pixel's mask values sum to N/2 (balanced columns, bilinear weights
    # summing to 1), so Σ s_i·M_i − s̄·Σ M_i = N·p·(S − s̄): the same map up to an offset.
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image, target = faces(1, 32, 32)[0], ExplainTarget(class_index=0)
    paper = rise(model, image=image, target=target,
                 options=RiseOptions(masks=256, seed=3, estimator="paper", design="orthogonal")).values
    centred = rise(model, image=image, target=target, options=RiseOptions(masks=256, seed=3)).values
    offset = paper.astype(np.float64) - centred
    np.testing.assert_allclose(offset, offset.mean(), atol=1e-5 * np.ptp(paper))
    assert np.ptp(paper) > 0.1 * abs(offset.mean()) > 0


# --- early stopping ------------------------------------------------------------------------------


def test_early_stopping_with_blocks_stops_earlier_than_with_independent_masks(faces):
    # Target 0.99 on the planted classifier: about 900–1300 independent masks, 128–256 orthogonal
    # ones (four seeds).
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image, target = faces(1, 32, 32)[0], ExplainTarget(class_index=0)
    used = {}
    for design in ("independent", "orthogonal"):
        options = RiseOptions(masks=4000, target_fidelity=0.99, check_every=64, design=design)
        result = rise(model, image=image, target=target, options=options)
        assert result.extra["stop_reason"] == "target_fidelity" and result.extra["fidelity_estimate"] >= 0.99
        assert result.extra["masks"] == result.forward_passes <= 4000
        used[design] = result.extra["masks"]
    assert used["orthogonal"] % 64 == 0 and 3 * used["orthogonal"] < used["independent"]


def test_blocks_are_dealt_whole_to_the_halves_and_checked_at_block_boundaries(faces):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image = faces(1, 32, 32)[0]

    class Recorder:
        def __init__(self) -> None:
            self.halves: list[np.ndarray] = []

        def add(self, masks: np.ndarray, scores: np.ndarray, half: np.ndarray | None = None) -> None:
            self.halves.append(half)

    recorder, calls = Recorder(), []
    options = RiseOptions(masks=100, cells=3, chunk=40)  # blocks of 16: chunks of 32, within one memory bound
    extra = accumulate(recorder, lambda which: np.zeros((32, 32)), Scorer(model, ClassTarget(0)), image, options,
                       lambda *call: calls.append(call), "rise", lambda scores: scores)
    np.testing.assert_array_equal(np.concatenate(recorder.halves), (np.arange(100) // 16) % 2)
    assert [done for done, _, _ in calls] == [32, 64, 96, 100] and extra["sample_unit"] == 16
    stopped = rise(model, image=image, target=ExplainTarget(class_index=0),
                   options=RiseOptions(masks=4000, target_fidelity=0.9, check_every=50, chunk=40, cells=3))
    assert stopped.extra["stop_reason"] == "target_fidelity" and stopped.extra["masks"] % 64 == 0  # 50 → 4 blocks


def test_corr_rise_takes_orthogonal_blocks(faces):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = faces(2, 32, 32)
    target = ExplainTarget(mate=mate)
    result = corr_rise(model, image=probe, target=target, options=CorrRiseOptions(masks=4000, target_fidelity=0.95))
    used = result.extra["masks"]
    assert result.extra["stop_reason"] == "target_fidelity" and used == result.forward_passes < 4000 and used % 64 == 0
    fixed = corr_rise(model, image=probe, target=target, options=CorrRiseOptions(masks=used))
    np.testing.assert_array_equal(result.values, fixed.values)


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "field"), [
    ({"design": "hadamard"}, "design"), ({"design": "Orthogonal"}, "design"),
    ({"keep": 0.3, "design": "orthogonal"}, "design"), ({"antithetic": True, "design": "orthogonal"}, "antithetic"),
    ({"masks": 100, "target_fidelity": 0.9}, "target_fidelity"),  # one block of 64 per half needs 128
])
def test_bad_design_options_name_the_option(values, field):
    for options in (RiseOptions, CorrRiseOptions):
        with pytest.raises(InvalidRequest) as info:
            options(**values)
        assert info.value.field == field
    assert RiseOptions(keep=0.3, design="independent").keep == 0.3
    assert RiseOptions(antithetic=True, design="independent").antithetic


def test_unset_design_and_check_step_follow_the_estimator_and_the_masks():
    """Unset: orthogonal blocks checked every 64 masks; the paper estimator, keep ≠ 0.5 and antithetic pairs
    get the paper's independent masks (checked every 250); set values win."""
    assert (RiseOptions().mask_design, RiseOptions().check_interval) == ("orthogonal", 64)
    for values in ({"estimator": "paper"}, {"keep": 0.3}, {"antithetic": True}):
        options = RiseOptions(**values)
        assert (options.design, options.mask_design, options.check_interval) == (None, "independent", 250)
    assert RiseOptions(estimator="paper", design="orthogonal", check_every=10).mask_design == "orthogonal"
    assert RiseOptions(estimator="paper", check_every=10).check_interval == 10


def test_the_two_halves_draw_independent_shifts():
    """Even and odd blocks (early stopping's halves) start their shift sequences independently: knowing block
    0's shift says nothing of block 1's (with one start it fixed it up to rounding)."""
    pairs = np.array([[b[0].dy, b[1].dy] for b in (blocks(seed, 2, 2, cell=5) for seed in range(3000))])
    table = np.zeros((5, 5))
    np.add.at(table, (pairs[:, 0], pairs[:, 1]), 1)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / len(pairs)
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 45  # 16 degrees of freedom: P(χ² > 45) ≈ 1e-4; one shared start gives thousands


def test_numpy_integer_options_are_taken():
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    image = np.full((8, 8, 3), 120, np.float32)
    options = RiseOptions(masks=np.int64(64), cells=np.int64(3), chunk=np.int64(8))
    result = rise(model, image=image, target=ExplainTarget(class_index=0), options=options)
    assert result.extra["masks"] == 64 and result.extra["design"] == "orthogonal"
