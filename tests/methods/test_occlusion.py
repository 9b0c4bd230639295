"""Occlusion against brute-force references written here: onnxruntime run directly, windows enumerated by hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy.ndimage import gaussian_filter

from faceaudit.engine.fills import VGGFACE_MEAN_RGB
from faceaudit.errors import InvalidRequest
from faceaudit.methods import occlusion as occlusion_module
from faceaudit.methods.common import ExplainTarget
from faceaudit.methods.occlusion import OcclusionOptions, occlusion, window_starts, windows
from faceaudit.testing import zoo

from tests.conftest import prepared

Box = tuple[int, int, int, int]
# Planted ground truth: 48×48 faces whose score depends only on a 32×32 box. A patch of p px smears
# the map p − 1 px beyond the box (border pixels average windows that overlap it), so the ≥ 90 %
# criterion needs p small against the box: with p = 2 the box holds ≥ 93 % (95 % on average over
# seeds), with the zoo's default 8×8 box and p = 5 only about 60 %.
PLANTED_SIZE, PLANTED_BOX, PLANTED_PATCH = 48, (8, 40, 8, 40), 2


def run_onnx(proto: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """The model's first output for RGB [0, 255] images under the default spec (x = img/255, NCHW)."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(images: np.ndarray) -> np.ndarray:
        x = (np.asarray(images, np.float64) / 255.0).transpose(0, 3, 1, 2).astype(np.float32)
        return session.run(None, {"input": x})[0].astype(np.float64)

    return run


def spans(size: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Window extents [start, end) from 0 in steps of stride until one reaches the border, clipped."""
    found, start = [], 0
    while True:
        found.append((start, min(start + patch, size)))
        if start + patch >= size:
            return found
        start += stride


def occlude(image: np.ndarray, fill: np.ndarray, box: Box | None) -> np.ndarray:
    out = np.array(image, dtype=np.float64)
    if box is not None:
        top, bottom, left, right = box
        out[top:bottom, left:right] = fill[top:bottom, left:right]
    return out


def brute_map(score: Callable[[Box | None], float], height: int, width: int, patch: int, stride: int) -> np.ndarray:
    """Mean over covering windows of score(unoccluded) − score(occluded at the window), one window at a time."""
    total, count = np.zeros((height, width)), np.zeros((height, width))
    original = score(None)
    for top, bottom in spans(height, patch, stride):
        for left, right in spans(width, patch, stride):
            total[top:bottom, left:right] += original - score((top, bottom, left, right))
            count[top:bottom, left:right] += 1
    assert count.min() >= 1
    return total / count


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def box_share(values: np.ndarray, box: Box) -> float:
    """Share of the positive map mass inside the box."""
    top, bottom, left, right = box
    positive = np.clip(values, 0, None)
    return float(positive[top:bottom, left:right].sum() / positive.sum())


def fill_image(image: np.ndarray, fill: str) -> np.ndarray:
    """The fills as documented in faceaudit.engine.fills, built here."""
    colours = {"zero": (0.0, 0.0, 0.0), "constant": (10.0, 200.0, 30.0), "dataset_mean": VGGFACE_MEAN_RGB}
    if fill == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1)), image.shape)
    if fill == "blur":
        return gaussian_filter(image.astype(np.float64), sigma=(1.5, 1.5, 0), mode="nearest")
    return np.broadcast_to(np.asarray(colours[fill]), image.shape)


FILL_OPTIONS = {
    "zero": {}, "mean": {}, "dataset_mean": {}, "blur": {"blur_sigma": 1.5},
    "constant": {"constant": (10.0, 200.0, 30.0)},
}


@pytest.mark.parametrize("fill", sorted(FILL_OPTIONS))
def test_classifier_map_equals_brute_force(faces, fill):
    proto = zoo.linear_classifier(height=8, width=8, classes=5)
    image = faces(1, 8, 8)[0]
    run, fills = run_onnx(proto), fill_image(image, fill)
    expected = brute_map(lambda box: run(occlude(image, fills, box)[None])[0, 2], 8, 8, 3, 2)
    options = OcclusionOptions(patch=3, stride=2, fill=fill, **FILL_OPTIONS[fill])
    model = prepared(proto, {"kind": "classifier"})
    result = occlusion(model, image=image, target=ExplainTarget(class_index=2), options=options)
    np.testing.assert_allclose(result.values, expected, atol=1e-5, rtol=0)
    assert result.values.shape == (8, 8) and result.values.dtype == np.float32
    assert result.extra["windows"] == 16 and result.forward_passes == 17


def test_contrastive_pair_occlusion_equals_brute_force(faces):
    proto = zoo.linear_classifier(height=8, width=8, classes=6, seed=3)
    probe, mate, non_mate = faces(3, 8, 8)
    run = run_onnx(proto)
    mate_emb, non_mate_emb = run(np.stack([mate, non_mate]))

    def score(box: Box | None) -> float:
        emb = run(occlude(probe, fill_image(probe, "mean"), box)[None])[0]
        return cosine(emb, mate_emb) - cosine(emb, non_mate_emb)

    expected = brute_map(score, 8, 8, 3, 2)
    model = prepared(proto, {"kind": "embedding"})
    result = occlusion(model, image=probe, target=ExplainTarget(mate=mate, non_mate=non_mate),
                       options=OcclusionOptions(patch=3, stride=2, fill="mean"))
    np.testing.assert_allclose(result.values, expected, atol=1e-5, rtol=0)
    assert result.signed


def test_window_starts_reach_the_border_and_the_last_window_is_clipped():
    assert window_starts(10, 4, 4) == [0, 4, 8]
    boxes = windows(10, 10, 4, 4)
    assert len(boxes) == 9 and boxes[0] == (0, 4, 0, 4) and boxes[-1] == (8, 10, 8, 10)
    assert window_starts(8, 3, 2) == [0, 2, 4, 6]
    assert window_starts(12, 4, 4) == [0, 4, 8]  # exact fit: no extra window
    assert window_starts(7, 7, 3) == [0]
    assert windows(6, 9, 3, 3) == [(t, t + 3, l, l + 3) for t in (0, 3) for l in (0, 3, 6)]


@pytest.mark.parametrize("size", [5, 8, 13])
@pytest.mark.parametrize(("patch", "stride"), [(1, 1), (3, 1), (3, 2), (4, 3), (5, 5)])
def test_windows_match_the_reference_enumeration(size, patch, stride):
    expected = [(t, b, l, r) for t, b in spans(size, patch, stride) for l, r in spans(size, patch, stride)]
    assert windows(size, size, patch, stride) == expected


def test_planted_classifier_region_holds_the_map_mass(faces, rng):
    proto = zoo.planted_region_classifier(height=PLANTED_SIZE, width=PLANTED_SIZE, box=PLANTED_BOX)
    probe = faces(1, PLANTED_SIZE, PLANTED_SIZE)[0]
    result = occlusion(prepared(proto, {"kind": "classifier"}), image=probe, target=ExplainTarget(class_index=1),
                       options=OcclusionOptions(patch=PLANTED_PATCH, stride=1))
    assert box_share(result.values, PLANTED_BOX) >= 0.9
    assert box_share(rng.uniform(0, 1, result.values.shape), PLANTED_BOX) < 0.9


def test_planted_embedding_region_holds_the_pair_occlusion_mass(faces, rng):
    proto = zoo.planted_region_embedding(height=PLANTED_SIZE, width=PLANTED_SIZE, box=PLANTED_BOX)
    probe, mate = faces(2, PLANTED_SIZE, PLANTED_SIZE)
    result = occlusion(prepared(proto, {"kind": "embedding"}), image=probe, target=ExplainTarget(mate=mate),
                       options=OcclusionOptions(patch=PLANTED_PATCH, stride=1))
    assert box_share(result.values, PLANTED_BOX) >= 0.9
    assert box_share(rng.uniform(0, 1, result.values.shape), PLANTED_BOX) < 0.9


def test_contrastive_map_vanishes_when_the_non_mate_is_the_mate(faces):
    model = prepared(zoo.linear_classifier(height=8, width=8, classes=6), {"kind": "embedding"})
    probe, mate = faces(2, 8, 8)
    options = OcclusionOptions(patch=3, stride=2)
    result = occlusion(model, image=probe, target=ExplainTarget(mate=mate, non_mate=mate.copy()), options=options)
    plain = occlusion(model, image=probe, target=ExplainTarget(mate=mate), options=options)
    np.testing.assert_allclose(result.values, 0.0, atol=1e-6)
    assert np.abs(plain.values).max() > 1e-2  # the pair map itself is not zero


@pytest.mark.parametrize(("values", "field"), [
    ({"patch": 0}, "patch"), ({"stride": 0}, "stride"), ({"patch": 3, "stride": 4}, "stride"),
    ({"fill": "grey"}, "fill"), ({"fill": "constant"}, "constant"), ({"chunk": 0}, "chunk"),
    ({"patch": 2.5}, "patch"), ({"blur_sigma": -1.0}, "blur_sigma"),
])
def test_bad_options_name_the_option(values, field):
    with pytest.raises(InvalidRequest) as info:
        OcclusionOptions(**values)
    assert info.value.field == field


def test_patch_larger_than_the_image_is_refused(faces):
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    with pytest.raises(InvalidRequest) as info:
        occlusion(model, image=faces(1, 8, 8)[0], target=ExplainTarget(class_index=0),
                  options=OcclusionOptions(patch=9, stride=1))
    assert info.value.field == "patch"


def test_embedding_target_to_a_classifier_is_refused(faces):
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    probe, mate = faces(2, 8, 8)
    with pytest.raises(InvalidRequest) as info:
        occlusion(model, image=probe, target=ExplainTarget(mate=mate), options=OcclusionOptions(patch=3, stride=2))
    assert info.value.field == "target"


def test_chunk_size_does_not_change_the_map(faces):
    model = prepared(zoo.vgg_classifier(height=16, width=16), {"kind": "classifier"}, max_batch=8)
    image = faces(1, 16, 16)[0]
    target = ExplainTarget(class_index=3)
    maps = [occlusion(model, image=image, target=target, options=OcclusionOptions(patch=5, stride=2, chunk=chunk)).values
            for chunk in (1, 7, 64)]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6, rtol=0)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-6, rtol=0)


def test_progress_counts_forward_passes_up_to_the_total(faces):
    model = prepared(zoo.linear_classifier(height=8, width=8), {"kind": "classifier"})
    calls: list[tuple[int, int, str]] = []
    result = occlusion(model, image=faces(1, 8, 8)[0], target=ExplainTarget(class_index=0),
                       options=OcclusionOptions(patch=3, stride=1, chunk=5), progress=lambda *call: calls.append(call))
    done = [c[0] for c in calls]
    assert len(calls) == 8  # 36 windows in chunks of 5
    assert done == sorted(set(done)) and {c[1] for c in calls} == {37} and {c[2] for c in calls} == {"occlusion"}
    assert done[-1] == 37 == result.forward_passes


def test_documented_defaults_are_the_real_ones():
    defaults = OcclusionOptions()
    for name in ("patch", "stride", "fill", "blur_sigma", "chunk"):
        assert f"{name}={getattr(defaults, name)}" in occlusion_module.__doc__
