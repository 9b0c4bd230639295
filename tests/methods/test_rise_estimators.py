"""RISE's estimators (paper, centred), antithetic masks and early stopping (issue 8), and CorrRISE's."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from faceaudit.engine.scorer import ClassTarget, Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, options_from
from faceaudit.methods.corr_rise import CorrRiseOptions, corr_rise
from faceaudit.methods.rise import RiseOptions, WeightedMaskSum, accumulate, rise, rise_masks
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.methods.test_rise import all_masks, cosines, run_onnx

Z_FAMILY = 4.5  # |z| bound for 64 pixels: P(any |z| > 4.5) ≤ 64 · 2Φ(−4.5) ≈ 4e-4 under the null


def two_pass_centred(masks: np.ndarray, scores: np.ndarray, keep: float, block: int = 1) -> np.ndarray:
    """Σ (s_i − s̄)·M_i / (D·p) with s̄ computed first, from stored masks: the two-pass formula.

    D = N − 1 + Σ_b m_b(m_b − 1) / (N·(n − 1)) over blocks of n masks (the last one m masks):
    N − 1 for independent masks (block 1).
    """
    n = len(scores)
    sizes = [min(block, n - start) for start in range(0, n, block)]
    divisor = n - 1 + (sum(m * (m - 1) for m in sizes) / (n * (block - 1)) if block > 1 else 0)
    centred = scores - scores.mean()
    return np.tensordot(centred, masks, axes=1) / (divisor * keep)


def rise_values(model, image, target, **options) -> np.ndarray:
    return rise(model, image=image, target=target, options=RiseOptions(**options)).values.astype(np.float64)


# --- centred estimator ---------------------------------------------------------------------------


def test_centred_map_is_the_paper_map_minus_a_constant_in_expectation(faces):
    # K runs of N masks each (the same masks for both estimators in run k). Under the claim
    # E[S_c] = E[S] − E[s], d_k = S_k − S_c,k has a constant expectation, so e_k = d_k − mean(d_k)
    # has expectation 0 at every pixel; its mean over the runs is tested against its own standard
    # error at each of the 64 pixels. A nonlinear model (ReLU, max-pool) and a tiny N (where a bias
    # of order 1/N would show) make the check strict; the 1/(N·p) normalisation, biased by
    # the factor (N−1)/N, is rejected by the same statistic.
    model = prepared(zoo.vgg_classifier(height=8, width=8), {"kind": "classifier"})
    image, target = faces(1, 8, 8)[0], ExplainTarget(class_index=5)
    runs, masks = 800, 4

    def z_scores(differences: np.ndarray) -> np.ndarray:
        e = differences - differences.mean(axis=(1, 2), keepdims=True)
        return e.mean(axis=0) / (e.std(axis=0, ddof=1) / math.sqrt(runs))

    paper = np.array([rise_values(model, image, target, masks=masks, cells=3, seed=k, estimator="paper")
                      for k in range(runs)])
    centred = np.array([rise_values(model, image, target, masks=masks, cells=3, seed=k) for k in range(runs)])
    difference = paper - centred
    assert np.abs(z_scores(difference)).max() < Z_FAMILY
    offset, offset_error = difference.mean(), difference.mean(axis=(1, 2)).std(ddof=1) / math.sqrt(runs)
    assert abs(offset) > 10 * offset_error  # the constant, E[s], is really there: the maps differ
    assert np.abs(z_scores(paper - centred * (masks - 1) / masks)).max() > Z_FAMILY  # the test has power


@pytest.mark.parametrize(("keep", "design"), [(0.4, "independent"), (0.5, "orthogonal")])
def test_streaming_centred_map_equals_the_two_pass_formula(faces, keep, design):
    proto = zoo.linear_classifier(height=8, width=8, classes=5)
    model = prepared(proto, {"kind": "classifier"})
    image = faces(1, 8, 8)[0]
    options = RiseOptions(masks=300, cells=3, keep=keep, seed=11, chunk=13, design=design)
    result = rise(model, image=image, target=ExplainTarget(class_index=2), options=options)

    masks = all_masks(11, 300, 3, keep, 8, 8, design=design).astype(np.float64)
    scores = run_onnx(proto)(image[None] * masks[..., None])[:, 2]
    expected = two_pass_centred(masks, scores, keep, block=16 if design == "orthogonal" else 1)  # 3×3 cells: 16
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert result.signed and result.extra["masks"] == result.forward_passes == 300


def test_streaming_contrastive_centred_map_equals_the_two_pass_formula_of_the_differences(faces):
    proto = zoo.linear_classifier(height=8, width=8, classes=6, seed=3)
    model = prepared(proto, {"kind": "embedding"})
    probe, mate, non_mate = faces(3, 8, 8)
    result = rise(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate),
                  options=RiseOptions(masks=250, cells=4, seed=2, chunk=64))

    run = run_onnx(proto)
    masks = all_masks(2, 250, 4, 0.5, 8, 8, design="orthogonal").astype(np.float64)  # the default design
    embeddings = run(probe[None] * masks[..., None])
    difference = cosines(embeddings, run(mate[None])[0]) - cosines(embeddings, run(non_mate[None])[0])
    expected = two_pass_centred(masks, difference, 0.5, block=32)  # 4×4 cells: blocks of 32
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_running_sums_equal_the_two_pass_formula_to_float64_rounding():
    rng = np.random.default_rng(4)
    masks = rng.random((500, 5, 6)).astype(np.float32)
    scores = 0.9 + 0.01 * rng.normal(size=500)  # a cosine near 1: the case the centring is for
    sums = WeightedMaskSum(5, 6)
    cuts = list(range(37, 500, 37))
    for part, (chunk, chunk_scores) in enumerate(zip(np.split(masks, cuts), np.split(scores, cuts))):
        sums.add(chunk, chunk_scores, np.full(len(chunk), part % 2))
    expected = two_pass_centred(masks.astype(np.float64), scores, 0.5)
    np.testing.assert_allclose(sums.saliency(0.5, "centred"), expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    paper = np.tensordot(scores, masks.astype(np.float64), axes=1) / (500 * 0.5)
    np.testing.assert_allclose(sums.saliency(0.5, "paper"), paper, rtol=1e-12)
    half = np.concatenate([np.full(len(c), p % 2) for p, c in enumerate(np.split(masks, cuts))]) == 1
    np.testing.assert_allclose(sums.saliency(0.5, "centred", 1),
                               two_pass_centred(masks[half].astype(np.float64), scores[half], 0.5), rtol=1e-9)


def test_a_single_mask_gives_an_empty_centred_map():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    image = np.full((8, 8, 3), 120, np.float32)
    values = rise(model, image=image, target=ExplainTarget(class_index=0), options=RiseOptions(masks=1, cells=3)).values
    np.testing.assert_array_equal(values, np.zeros((8, 8), np.float32))


# --- antithetic masks ----------------------------------------------------------------------------


def test_antithetic_pairs_are_complements_at_half_keep():
    masks = np.concatenate(list(rise_masks(np.random.default_rng(3), 400, 7, 0.5, 20, 24, 64, antithetic=True)))
    np.testing.assert_allclose(masks[1::2], 1.0 - masks[::2], atol=1e-6)
    assert not np.allclose(masks[2::2], masks[:-2:2])  # pairs are independent of each other


@pytest.mark.parametrize(("height", "width", "cells", "keep"), [(20, 24, 7, 0.5), (30, 17, 5, 0.3), (16, 16, 4, 0.8)])
def test_antithetic_pairs_share_the_shift_and_use_antithetic_grids(height, width, cells, keep):
    # Pair k uses row k of the draws: G = u < p, G' = u ≥ 1 − p (1 − G at p = 0.5), one shift,
    # upsampled and cropped as the reference does (scipy's zoom, as in test_rise).
    count = 20
    masks = np.concatenate(list(rise_masks(np.random.default_rng(5), count, cells, keep, height, width, 7,
                                           antithetic=True)))
    draws = np.random.default_rng(5).random((count // 2, cells * cells + 2))
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    zoom = ((cells + 1) * cell_h / cells, (cells + 1) * cell_w / cells)
    for k, row in enumerate(draws):
        dy, dx = int(row[-2] * cell_h), int(row[-1] * cell_w)
        for mask, grid in zip(masks[2 * k : 2 * k + 2], (row[:-2] < keep, row[:-2] >= 1 - keep)):
            up = ndimage.zoom(grid.reshape(cells, cells).astype(np.float64), zoom, order=1, mode="mirror", grid_mode=True)
            np.testing.assert_allclose(mask, up[dy : dy + height, dx : dx + width], atol=1e-6)


def test_antithetic_masks_keep_the_keep_probability_and_do_not_depend_on_the_chunk_size():
    def masks(chunk: int) -> list[np.ndarray]:
        return list(rise_masks(np.random.default_rng(9), 3000, 7, 0.3, 20, 24, chunk, antithetic=True))

    reference = np.concatenate(masks(64))
    odd = masks(7)
    assert {len(c) for c in odd} == {8}  # an odd chunk is rounded up: pairs never straddle chunks
    np.testing.assert_array_equal(np.concatenate(odd), reference)
    assert np.abs(reference.mean(axis=0) - 0.3).max() < 0.05  # each mask is still a RISE mask (p kept)
    assert np.abs(reference[1::2].mean(axis=0) - 0.3).max() < 0.05


def test_antithetic_centred_map_is_the_paper_map_minus_the_mean_score(faces):
    # At p = 0.5 every pixel's mask values sum to N/2, and the unbiased divisor of whole pairs is
    # N (not N − 1), so S_c = S − s̄ within a run.
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image, target = faces(1, 32, 32)[0], ExplainTarget(class_index=0)
    pairs = {"antithetic": True, "design": "independent"}
    paper = rise_values(model, image, target, masks=200, seed=3, estimator="paper", **pairs)
    centred = rise_values(model, image, target, masks=200, seed=3, **pairs)
    offset = paper - centred
    np.testing.assert_allclose(offset, offset.mean(), atol=1e-5 * np.ptp(paper))
    assert np.ptp(paper) > 0.1 * abs(offset.mean()) > 0


def test_an_odd_number_of_antithetic_masks_is_refused():
    with pytest.raises(InvalidRequest) as info:
        RiseOptions(masks=301, antithetic=True, design="independent")
    assert info.value.field == "masks" and "even" in str(info.value)
    assert RiseOptions(masks=300, antithetic=True, design="independent").masks == 300


# --- early stopping ------------------------------------------------------------------------------


def early(model, image, target, calls=None, **options):
    progress = None if calls is None else (lambda *call: calls.append(call))
    return rise(model, image=image, target=target, options=RiseOptions(**options), progress=progress)


@pytest.mark.parametrize("design", ["independent", "orthogonal"])
def test_early_stopping_stops_earlier_on_an_easy_model_than_on_a_noisy_one(faces, design):
    # Easy: the planted classifier's score depends strongly on one box, so the map is a bump well
    # above its Monte Carlo noise. Noisy: the IResNet-style embedder averages its features over the
    # whole image (global average pooling), so the cosine to the mate, near 1, barely varies with
    # any one region; its map is a small variation around a flat map and converges slowly
    # (three random images: independent masks 192 against the maximum, 4000; orthogonal blocks 128 against 448–640).
    image, mate = faces(2, 32, 32)
    easy = early(prepared(zoo.planted_region_classifier(), {"kind": "classifier"}), image,
                 ExplainTarget(class_index=0), masks=4000, target_fidelity=0.95, design=design)
    noisy = early(prepared(zoo.iresnet_embedding(), {"kind": "embedding"}), image, ExplainTarget(mate=mate),
                  masks=4000, target_fidelity=0.95, design=design)
    assert easy.extra["stop_reason"] == "target_fidelity" and easy.extra["fidelity_estimate"] >= 0.95
    assert easy.extra["fidelity_estimate"] == pytest.approx(easy.extra["spearman_brown"] ** 0.5)
    assert easy.extra["masks"] <= 1000 and 2 * easy.extra["masks"] < noisy.extra["masks"] <= 4000
    for result in (easy, noisy):
        assert result.extra["masks"] == result.forward_passes


def test_early_stopping_never_exceeds_the_maximum_and_reports_it(faces):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image, target = faces(1, 32, 32)[0], ExplainTarget(class_index=0)
    calls: list[tuple[int, int, str]] = []
    result = early(model, image, target, calls, masks=600, target_fidelity=0.99999, check_every=100)
    assert (result.extra["masks"], result.forward_passes, result.extra["stop_reason"]) == (600, 600, "masks")
    assert calls[-1] == (600, 600, "rise") and all(phase == "rise" for _, _, phase in calls)
    r, reliability = result.extra["split_half_r"], result.extra["spearman_brown"]
    assert -1 <= r <= 1 and reliability == pytest.approx(2 * r / (1 + r))


def test_an_early_stopped_map_is_the_fixed_size_map_of_the_masks_used(faces):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image, target = faces(1, 32, 32)[0], ExplainTarget(class_index=1)
    calls: list[tuple[int, int, str]] = []
    stopped = early(model, image, target, calls, masks=4000, target_fidelity=0.9, check_every=100, seed=4)
    used = stopped.extra["masks"]
    assert stopped.extra["stop_reason"] == "target_fidelity" and used < 4000
    fixed = early(model, image, target, masks=used, seed=4)
    np.testing.assert_array_equal(stopped.values, fixed.values)
    assert fixed.extra["split_half_r"] == stopped.extra["split_half_r"] and fixed.extra["stop_reason"] == "masks"
    # progress: every chunk against the maximum, then once more with the real count and the reason
    assert calls[-1] == (used, 4000, "rise: converged")
    assert [done for done, _, _ in calls[:-1]] == list(range(64, used + 1, 64)) and calls[-2][2] == "rise"


def test_antithetic_halves_are_dealt_by_pair(faces):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})

    class Recorder:
        def __init__(self) -> None:
            self.halves: list[np.ndarray] = []

        def add(self, masks: np.ndarray, scores: np.ndarray, half: np.ndarray | None = None) -> None:
            self.halves.append(half)

    recorder = Recorder()
    options = RiseOptions(masks=40, chunk=7, antithetic=True, design="independent")
    accumulate(recorder, lambda which: np.zeros((32, 32)), Scorer(model, ClassTarget(0)), faces(1, 32, 32)[0],
               options, None, "rise", lambda scores: scores)
    np.testing.assert_array_equal(np.concatenate(recorder.halves), np.tile([0, 0, 1, 1], 10))


def test_corr_rise_stops_early_and_takes_antithetic_masks(faces):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = faces(2, 32, 32)
    target = ExplainTarget(mate=mate)
    calls: list[tuple[int, int, str]] = []
    options = CorrRiseOptions(masks=4000, target_fidelity=0.95, antithetic=True, design="independent")
    result = corr_rise(model, image=probe, target=target, options=options, progress=lambda *c: calls.append(c))
    used = result.extra["masks"]
    assert result.extra["stop_reason"] == "target_fidelity" and used == result.forward_passes < 4000
    assert used % 2 == 0 and calls[-1] == (used, 4000, "corr_rise: converged")
    fixed = corr_rise(model, image=probe, target=target,
                      options=CorrRiseOptions(masks=used, antithetic=True, design="independent"))
    np.testing.assert_array_equal(result.values, fixed.values)


def test_corr_rise_refuses_the_paper_estimator():
    with pytest.raises(InvalidRequest) as info:
        CorrRiseOptions(estimator="paper")
    assert info.value.field == "estimator"


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "field"), [
    ({"estimator": "median"}, "estimator"), ({"estimator": "Centred"}, "estimator"), ({"estimator": None}, "estimator"),
    ({"antithetic": "yes"}, "antithetic"), ({"antithetic": 1}, "antithetic"),
    ({"target_fidelity": 0.0}, "target_fidelity"), ({"target_fidelity": 1.0}, "target_fidelity"),
    ({"target_fidelity": 1.5}, "target_fidelity"), ({"target_fidelity": -0.2}, "target_fidelity"),
    ({"target_fidelity": float("nan")}, "target_fidelity"), ({"target_fidelity": True}, "target_fidelity"),
    ({"target_fidelity": "0.9"}, "target_fidelity"),
    ({"check_every": 0}, "check_every"), ({"check_every": -5}, "check_every"), ({"check_every": 2.5}, "check_every"),
])
def test_bad_estimator_and_stopping_options_name_the_option(values, field):
    for options in (RiseOptions, CorrRiseOptions):
        with pytest.raises(InvalidRequest) as info:
            options(**values)
        assert info.value.field == field


def test_estimator_and_stopping_options_convert_from_loose_values():
    options = options_from(RiseOptions, {"estimator": "paper", "antithetic": "true", "design": "independent",
                                         "masks": "1000", "target_fidelity": "0.9", "check_every": "100"})
    assert (options.estimator, options.antithetic, options.design, options.target_fidelity, options.check_every) == (
        "paper", True, "independent", 0.9, 100)
    assert (RiseOptions().estimator, RiseOptions().antithetic, RiseOptions().target_fidelity) == ("centred", False, None)
    with pytest.raises(InvalidRequest) as info:
        options_from(RiseOptions, {"target_fidelity": "high"})
    assert info.value.field == "target_fidelity"


@pytest.mark.parametrize("estimator", ["centred", "paper"])
def test_a_one_mask_run_reports_no_split_half_correlation(estimator):
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    image = np.full((8, 8, 3), 120, np.float32)
    options = RiseOptions(masks=1, cells=3, estimator=estimator, design="independent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rise(model, image=image, target=ExplainTarget(class_index=0), options=options)
    assert np.isfinite(result.values).all() and result.extra["masks"] == 1
    assert (result.extra["split_half_r"], result.extra["spearman_brown"], result.extra["stop_reason"]) == (None, None, "masks")
    with pytest.raises(InvalidRequest) as info:  # a target needs both halves: two samples at least
        RiseOptions(masks=1, cells=3, estimator=estimator, design="independent", target_fidelity=0.5)
    assert info.value.field == "target_fidelity"


@pytest.mark.parametrize(("max_batch", "chunk"), [(1024, 64), (64, 1000)])
def test_early_stopping_stops_at_the_check_whatever_the_batch_and_chunk(faces, max_batch, chunk):
    """Large runtime batches or chunks must not carry the run past the check that passed."""
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"}, max_batch=max_batch)
    image = faces(1, 32, 32)[0]
    result = early(model, image, ExplainTarget(class_index=0), masks=4000, target_fidelity=0.9, check_every=100,
                   chunk=chunk)
    assert result.extra["stop_reason"] == "target_fidelity"
    # Stopped at the first chunk boundary at or after a multiple of check_every: never a batch later.
    assert result.extra["masks"] % 100 < min(chunk, 100)
    assert result.extra["masks"] == result.forward_passes <= 1000
