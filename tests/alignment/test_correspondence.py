from __future__ import annotations

import numpy as np
import pytest

from faceaudit.alignment import ARCFACE_112, WITHOUT_INNER_LIPS_68, LandmarkAligner, PreAligned, mean_face_68
from faceaudit.errors import InvalidRequest
from tests.alignment.warping import rotation, warp_image, warp_points

# A known affine warp of a 64x64 canonical face into an 80x72 (H, W) input image.
MATRIX = rotation(12.0, scale=1.1, shear=0.08)
SHIFT = np.array([4.0, 9.0])
INPUT = np.zeros((80, 72, 3))


def smooth_image(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    grey = 127.5 + 60 * np.sin(cols / 5.0) + 60 * np.cos(rows / 7.0)
    return np.repeat(grey[..., None], 3, axis=2)


def test_pre_aligned_same_shape_is_the_identity():
    correspondence = PreAligned((24, 20)).correspond(np.zeros((24, 20, 3)))
    input_xy, canonical_xy = correspondence.points(3)
    np.testing.assert_allclose(input_xy, canonical_xy, atol=1e-9)
    assert len(canonical_xy) == 8 * 7  # every grid point: rows 1, 4, ..., 22 and cols 0, 3, ..., 18 (centred)
    assert sorted(set(canonical_xy[:, 1])) == list(range(1, 24, 3))
    assert sorted(set(canonical_xy[:, 0])) == list(range(0, 20, 3))
    assert correspondence.scale == pytest.approx(1.0)
    values = np.random.default_rng(0).normal(size=(24, 20))
    np.testing.assert_allclose(correspondence.to_input(values), values, atol=1e-5)
    np.testing.assert_allclose(correspondence.to_canonical(values), values, atol=1e-5)


def test_pre_aligned_resizes_around_pixel_centres():
    correspondence = PreAligned((32, 32)).correspond(np.zeros((16, 16, 3)))
    input_xy, canonical_xy = correspondence.points(4)
    np.testing.assert_allclose(input_xy, (canonical_xy + 0.5) / 2.0 - 0.5, atol=1e-9)
    assert correspondence.scale == pytest.approx(2.0)


@pytest.mark.parametrize(("template", "margin"), [
    (mean_face_68((64, 64)), 0.0),
    (mean_face_68((64, 64)), 0.3),
    (ARCFACE_112 * (64 / 112), 0.5),
])
def test_landmark_warp_of_an_affine_face_is_the_affine_map(template, margin):
    correspondence = LandmarkAligner(template, (64, 64), margin=margin).correspond(
        INPUT, warp_points(template, MATRIX, SHIFT))
    input_xy, canonical_xy = correspondence.points(2)
    assert len(canonical_xy) > 50
    assert np.abs(input_xy - warp_points(canonical_xy, MATRIX, SHIFT)).max() < 0.5
    back, covered = correspondence.to_canonical_xy(input_xy)
    assert covered.all()
    assert np.abs(back - canonical_xy).max() < 0.5
    assert correspondence.scale == pytest.approx(1.0 / np.sqrt(abs(np.linalg.det(MATRIX))))


def test_landmark_warp_undoes_an_image_warp():
    canonical = smooth_image((64, 64))
    warped = warp_image(canonical, MATRIX, SHIFT, INPUT.shape[:2])
    template = mean_face_68((64, 64))
    correspondence = LandmarkAligner(template, (64, 64)).correspond(warped, warp_points(template, MATRIX, SHIFT))
    back = correspondence.to_canonical(warped[..., 0])
    face = back != 0  # the template's hull
    assert face.mean() > 0.4
    # Two bilinear resamplings of a smooth image: errors of a few grey levels out of 255.
    assert np.abs(back[face] - canonical[..., 0][face]).mean() < 2.0


def test_points_cover_only_the_face_and_the_image():
    template = ARCFACE_112 * (64 / 112)
    aligner = LandmarkAligner(template, (64, 64))
    correspondence = aligner.correspond(INPUT, warp_points(template, MATRIX, SHIFT))
    _, canonical_xy = correspondence.points(1)
    low, high = template.min(axis=0), template.max(axis=0)
    assert ((canonical_xy >= low - 1e-9) & (canonical_xy <= high + 1e-9)).all()
    # With a margin reaching below the image, only the points that land inside it are kept.
    low_face = template + [0.0, 79.0 - template[:, 1].max()]
    wide = LandmarkAligner(template, (64, 64), margin=0.6)
    inside_xy, _ = wide.correspond(INPUT, low_face).points(1)
    everywhere_xy, _ = wide.correspond(np.zeros((200, 72, 3)), low_face).points(1)
    assert len(inside_xy) < len(everywhere_xy)
    assert inside_xy[:, 1].max() <= 79.5 < everywhere_xy[:, 1].max()


def _swap_eyes(points: np.ndarray) -> np.ndarray:
    return points[[1, 0, 2, 3, 4]]


def _collapse(points: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[2] = (out[0] + out[1]) / 2.0  # nose between the eyes: the eyes-nose triangle has no area
    return out


@pytest.mark.parametrize("bad", [
    lambda p: p[:4],
    lambda p: np.vstack([p, p[:1]]),
    lambda p: p.ravel(),
    lambda p: np.where(np.arange(10).reshape(5, 2) == 3, np.nan, p),
    lambda p: p + [0.0, 200.0],
    lambda p: p - [50.0, 0.0],
    _swap_eyes,
    _collapse,
    lambda p: np.zeros_like(p) + 10.0,
    lambda p: [["a", "b"]] * 5,
], ids=["too_few", "too_many", "flat", "nan", "below", "left_of", "flipped", "collapsed", "one_point", "text"])
def test_bad_landmarks_are_refused(bad):
    template = ARCFACE_112 * (64 / 112)
    with pytest.raises(InvalidRequest) as info:
        LandmarkAligner(template, (64, 64)).correspond(INPUT, bad(warp_points(template, MATRIX, SHIFT)))
    assert info.value.field == "landmarks"


def test_crossed_inner_lips_are_refused_unless_left_out():
    template = mean_face_68((64, 64))
    landmarks = warp_points(template, MATRIX, SHIFT)
    upper, lower = [61, 62, 63], [67, 66, 65]
    landmarks[upper], landmarks[lower] = landmarks[lower] + [0.0, 0.3], landmarks[upper].copy()  # lips crossed
    with pytest.raises(InvalidRequest) as info:
        LandmarkAligner(template, (64, 64)).correspond(INPUT, landmarks)
    assert info.value.field == "landmarks"
    kept = WITHOUT_INNER_LIPS_68
    assert len(LandmarkAligner(template[kept], (64, 64)).correspond(INPUT, landmarks[kept]).points(4)[0]) > 50


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"template": [[0, 0], [1, 1], [2, 2]]}, "template"),
    ({"template": [[0, 0], [1, 1]]}, "template"),
    ({"template": [[0, 0], [9, 0], [0, 9], [0, 9]]}, "template"),
    ({"margin": -0.1}, "margin"),
    ({"canonical_shape": (0, 64)}, "canonical_shape"),
])
def test_bad_aligner_settings_are_refused(kwargs, field):
    settings = {"template": ARCFACE_112 * (64 / 112), "canonical_shape": (64, 64), **kwargs}
    with pytest.raises(InvalidRequest) as info:
        LandmarkAligner(settings.pop("template"), settings.pop("canonical_shape"), **settings)
    assert info.value.field == field


def test_maps_of_the_wrong_shape_are_refused():
    correspondence = PreAligned((8, 8)).correspond(np.zeros((8, 8, 3)))
    with pytest.raises(InvalidRequest) as info:
        correspondence.to_input(np.zeros((9, 8)))
    assert info.value.field == "canonical_map"
