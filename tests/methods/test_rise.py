"""RISE against references written here: scipy's resize for the masks, onnxruntime run by hand for the map."""

from __future__ import annotations

import dataclasses
import gc
import math
import tracemalloc
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy import ndimage

from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods import rise as rise_module
from faceaudit.methods.common import ExplainTarget, options_from
from faceaudit.methods.rise import RiseOptions, rise, rise_masks
from faceaudit.testing import zoo

from tests.conftest import prepared

Box = tuple[int, int, int, int]  # (top, bottom, left, right), bottom and right exclusive
PLANTED_BOX: Box = (8, 16, 20, 28)  # the zoo's default box in its 32×32 planted models
PLANTED_CELLS, PLANTED_MASKS = 8, 4000


def all_masks(seed: int, count: int, cells: int, keep: float, height: int, width: int, chunk: int = 64,
              design: str = "independent") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(list(rise_masks(rng, count, cells, keep, height, width, chunk, design=design)))


def run_onnx(proto: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """The model's output for RGB [0, 255] images under the default spec (x = img/255, NCHW)."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        x = (np.asarray(images, np.float64) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)
        return session.run(None, {"input": x})[0].astype(np.float64)

    return run


def cosines(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return embeddings @ reference / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(reference)


def planted_share(values: np.ndarray, cells: int = PLANTED_CELLS, box: Box = PLANTED_BOX) -> float:
    """Share of the map's mass above its noise floor that lies in the box grown by one RISE cell.

    Noise floor: median + 3σ, σ = 1.4826·MAD. Pixels beyond the box's reach (most of the image)
    hold the estimator's noise around a constant (E[f] for paper RISE, 0 for centred RISE and
    CorrRISE), so the median and
    MAD measure that constant and the noise. Without a floor, the positive half of the noise over
    those ~700 pixels weighs like the box: plain (map − median)⁺ puts 59–96 % in the grown box.
    Region: masks are bilinear blends of grid cells one upsampled cell, (s+1)·⌈H/s⌉/s px (4.5 px
    here), apart, so a pixel's mask is correlated with the box's up to two cells away and even the
    expected map spills over the box's border; the box is grown by one cell (5 px) on every side,
    to 18×18 px, a third of the image. In the bare box the share is 46–97 %.
    Measured over 30 seeds at N=4000, s=8: ≥ 99.9 % for RISE (classifier and embedding) and
    CorrRISE; the same maps shuffled ≤ 45 %. The paper RISE embedding map needs N=4000: at 2000 its
    noise (mostly mean score × mask-count noise) can hide the box (1 seed in 30 had no pixel above
    the floor).
    """
    median = np.median(values)
    above = np.clip(values - median - 3 * 1.4826 * np.median(np.abs(values - median)), 0, None)
    if not above.any():
        return 0.0
    height, width = values.shape
    grow = math.ceil((cells + 1) * math.ceil(height / cells) / cells)
    top, bottom, left, right = box
    return float(above[max(top - grow, 0) : bottom + grow, max(left - grow, 0) : right + grow].sum() / above.sum())


def random_maps_fail(values: np.ndarray) -> None:
    """The share is about the region's area for maps without location: a uniform one, and `values` shuffled."""
    rng = np.random.default_rng(7)
    assert planted_share(rng.random(values.shape)) < 0.9
    assert planted_share(rng.permutation(values.ravel()).reshape(values.shape)) < 0.9


def peak_bytes(explain: Callable[[], object]) -> int:
    """Peak traced memory of one call."""
    gc.collect()
    tracemalloc.start()
    try:
        explain()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- masks ---------------------------------------------------------------------------------------


def test_masks_have_the_asked_shape_range_and_mean():
    chunks = list(rise_masks(np.random.default_rng(0), 3000, 7, 0.3, 20, 24, 64))
    assert [len(c) for c in chunks] == [64] * 46 + [56]
    masks = np.concatenate(chunks)
    assert masks.dtype == np.float32 and masks.shape == (3000, 20, 24)
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert abs(masks.mean() - 0.3) < 0.01
    assert np.abs(masks.mean(axis=0) - 0.3).max() < 0.05  # no pixel favoured (standard error ≤ 0.009)
    assert (masks == 0).any() and (masks == 1).any() and ((masks > 0) & (masks < 1)).any()


@pytest.mark.parametrize(("height", "width", "cells", "keep"),
                         [(32, 32, 7, 0.5), (30, 17, 5, 0.6), (9, 9, 1, 0.5), (8, 8, 8, 0.5)])
def test_masks_are_the_reference_grids_resized_and_cropped(height, width, cells, keep):
    # Petsiuk et al.'s code: resize(grid, (s+1)·cell, order=1, mode='reflect') cropped at a shift in
    # [0, cell); scipy's zoom with mode='mirror', grid_mode=True is that resize. The draws are as
    # documented: one row of s² + 2 uniforms per mask.
    count = 30
    masks = all_masks(3, count, cells, keep, height, width, chunk=7)
    draws = np.random.default_rng(3).random((count, cells * cells + 2))
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    for mask, row in zip(masks, draws):
        grid = (row[:-2] < keep).reshape(cells, cells).astype(np.float64)
        dy, dx = int(row[-2] * cell_h), int(row[-1] * cell_w)
        zoom = ((cells + 1) * cell_h / cells, (cells + 1) * cell_w / cells)
        up = ndimage.zoom(grid, zoom, order=1, mode="mirror", grid_mode=True)
        assert up.shape == ((cells + 1) * cell_h, (cells + 1) * cell_w)
        np.testing.assert_allclose(mask, up[dy : dy + height, dx : dx + width], atol=1e-6)


def test_masks_are_reproducible_and_do_not_depend_on_the_chunk_size():
    reference = all_masks(5, 200, 7, 0.5, 16, 12, chunk=64)
    np.testing.assert_array_equal(all_masks(5, 200, 7, 0.5, 16, 12, chunk=7), reference)
    np.testing.assert_array_equal(all_masks(5, 200, 7, 0.5, 16, 12, chunk=200), reference)
    assert not np.array_equal(all_masks(6, 200, 7, 0.5, 16, 12), reference)


# --- the map -------------------------------------------------------------------------------------


def test_classifier_map_equals_the_brute_force_sum(faces):
    proto = zoo.linear_classifier(height=8, width=8, classes=5)
    model = prepared(proto, {"kind": "classifier"})
    image = faces(1, 8, 8)[0]
    options = RiseOptions(masks=300, cells=3, keep=0.4, seed=11, chunk=13, estimator="paper", design="independent")
    result = rise(model, image=image, target=ExplainTarget(class_index=2), options=options)

    masks = all_masks(11, 300, 3, 0.4, 8, 8).astype(np.float64)
    scores = run_onnx(proto)(image[None] * masks[..., None])[:, 2]
    expected = np.tensordot(scores, masks, axes=1) / (300 * 0.4)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert (result.method, result.forward_passes, result.extra["masks"]) == ("rise", 300, 300)
    assert (result.seed, result.signed) == (11, False)


def test_contrastive_embedding_map_equals_the_brute_force_difference(faces):
    proto = zoo.linear_classifier(height=8, width=8, classes=6, seed=3)
    model = prepared(proto, {"kind": "embedding"})
    probe, mate, non_mate = faces(3, 8, 8)
    options = RiseOptions(masks=250, cells=4, seed=2, chunk=64, estimator="paper")
    result = rise(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate), options=options)

    run = run_onnx(proto)
    masks = all_masks(2, 250, 4, 0.5, 8, 8, design="independent").astype(np.float64)  # paper: i.i.d. masks
    embeddings = run(probe[None] * masks[..., None])
    difference = cosines(embeddings, run(mate[None])[0]) - cosines(embeddings, run(non_mate[None])[0])
    expected = np.tensordot(difference, masks, axes=1) / (250 * 0.5)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert result.signed


def test_a_non_mate_equal_to_the_mate_gives_an_empty_contrastive_map(faces):
    model = prepared(zoo.planted_region_embedding(), {"kind": "embedding"})
    probe, mate = faces(2, 32, 32)
    result = rise(model, image=probe, target=ExplainTarget(mate=mate, non_mate=mate), options=RiseOptions(masks=200))
    assert np.abs(result.values).max() < 1e-6


def test_map_is_seeded():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    image = np.full((8, 8, 3), 200, np.float32)
    target = ExplainTarget(class_index=0)

    def values(seed: int) -> np.ndarray:
        return rise(model, image=image, target=target, options=RiseOptions(masks=100, cells=3, seed=seed)).values

    np.testing.assert_array_equal(values(1), values(1))
    assert not np.array_equal(values(1), values(2))


@pytest.mark.parametrize("estimator", ["centred", "paper"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["classifier", "embedding"])
def test_planted_region_holds_the_map_mass(faces, kind, seed, estimator):
    image, mate = faces(2, 32, 32)
    if kind == "classifier":
        model, target = prepared(zoo.planted_region_classifier(), {"kind": kind}), ExplainTarget(class_index=seed)
    else:
        model, target = prepared(zoo.planted_region_embedding(), {"kind": kind}), ExplainTarget(mate=mate)
    options = RiseOptions(masks=PLANTED_MASKS, cells=PLANTED_CELLS, seed=seed, estimator=estimator)
    values = rise(model, image=image, target=target, options=options).values
    assert planted_share(values) >= 0.9
    random_maps_fail(values)


def test_peak_memory_does_not_depend_on_the_number_of_masks(faces):
    model = prepared(zoo.planted_region_classifier(), {"kind": "classifier"})
    image = faces(1, 32, 32)[0]

    def peak(masks: int) -> int:
        options = RiseOptions(masks=masks, chunk=64)
        return peak_bytes(lambda: rise(model, image=image, target=ExplainTarget(class_index=0), options=options))

    small, large = peak(200), peak(4000)
    assert abs(large - small) < 64 * 32 * 32 * 4, (small, large)  # less than one chunk of masks


def test_progress_reaches_the_total_once_per_chunk():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    calls: list[tuple[int, int, str]] = []
    rise(model, image=np.full((8, 8, 3), 99, np.float32), target=ExplainTarget(class_index=1),
         options=RiseOptions(masks=150, cells=3, chunk=64), progress=lambda *call: calls.append(call))
    assert calls == [(64, 150, "rise"), (128, 150, "rise"), (150, 150, "rise")]


# --- options -------------------------------------------------------------------------------------


def test_defaults_are_the_documented_paper_defaults():
    assert (RiseOptions().masks, RiseOptions().cells, RiseOptions().keep, RiseOptions().fill) == (4000, 7, 0.5, "zero")
    assert "masks=4000 (N), cells=7 (s), keep=0.5 (p)" in rise_module.__doc__


@pytest.mark.parametrize(("values", "field"), [
    ({"masks": 0}, "masks"), ({"masks": -3}, "masks"), ({"masks": 2.5}, "masks"), ({"masks": True}, "masks"),
    ({"cells": 0}, "cells"), ({"keep": 0.0}, "keep"), ({"keep": 1.01}, "keep"), ({"keep": -0.5}, "keep"),
    ({"keep": float("nan")}, "keep"), ({"keep": "0.5"}, "keep"), ({"seed": -1}, "seed"), ({"chunk": 0}, "chunk"),
    ({"chunk": 5000}, "chunk"), ({"fill": "purple"}, "fill"), ({"fill": "constant"}, "constant"),
    ({"blur_sigma": 0.0}, "blur_sigma"),
])
def test_bad_options_name_the_option(values, field):
    with pytest.raises(InvalidRequest) as info:
        RiseOptions(**values)
    assert info.value.field == field


def test_too_many_masks_exceed_the_limit():
    with pytest.raises(LimitExceeded, match="masks"):
        RiseOptions(masks=1_000_001)
    assert RiseOptions(masks=1_000_000).masks == 1_000_000


def test_loose_option_values_are_converted():
    options = options_from(RiseOptions, {"masks": "100", "keep": "0.25", "design": "independent", "fill": "constant",
                                         "constant": "128"})
    assert options == dataclasses.replace(RiseOptions(), masks=100, keep=0.25, design="independent", fill="constant",
                                          constant=(128.0,))
    with pytest.raises(InvalidRequest) as info:
        options_from(RiseOptions, {"masks": "0"})
    assert info.value.field == "masks"


def test_cells_finer_than_a_pixel_and_a_mate_for_a_classifier_are_refused():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    image = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(InvalidRequest) as info:
        rise(model, image=image, target=ExplainTarget(class_index=0), options=RiseOptions(cells=9))
    assert info.value.field == "cells"
    with pytest.raises(InvalidRequest) as info:
        rise(model, image=image, target=ExplainTarget(mate=image))
    assert info.value.field == "target"
