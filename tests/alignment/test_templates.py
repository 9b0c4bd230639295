from __future__ import annotations

import numpy as np
import pytest

from faceaudit.alignment import (
    OPENFACE_MEAN_68,
    arcface_template,
    five_points,
    mean_face_68,
    mean_face_68_on,
    neutral_face,
)
from faceaudit.errors import InvalidRequest

# insightface python-package/insightface/utils/face_align.py, arcface_dst, copied by hand.
PUBLISHED_ARCFACE = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]


def test_five_point_template_is_the_published_one():
    assert arcface_template().tolist() == PUBLISHED_ARCFACE
    np.testing.assert_allclose(arcface_template(224), 2 * np.array(PUBLISHED_ARCFACE))
    np.testing.assert_allclose(arcface_template(256), 2 * (np.array(PUBLISHED_ARCFACE) + [8.0, 0.0]))
    with pytest.raises(InvalidRequest):
        arcface_template(100)


def test_mean_face_is_openface_template_placed_in_the_frame():
    # openface/align_dlib.py TEMPLATE: first, nose tip and last rows.
    assert OPENFACE_MEAN_68.shape == (68, 2)
    assert OPENFACE_MEAN_68[0].tolist() == [0.0792396913815, 0.339223741112]
    assert OPENFACE_MEAN_68[30].tolist() == [0.51816430343, 0.553157797772]
    assert OPENFACE_MEAN_68[67].tolist() == [0.477561227414, 0.778476346951]
    points = mean_face_68((100, 80), padding=0.1)
    low, high = points.min(axis=0), points.max(axis=0)
    assert high[0] - low[0] == pytest.approx(80 * 0.8)  # the wider side fills the frame less padding
    assert (low >= -0.5).all() and high[1] <= 99.5
    raw = np.ptp(OPENFACE_MEAN_68, axis=0)
    assert np.ptp(points, axis=0) / raw == pytest.approx(np.full(2, 64 / raw[0]))  # uniform scale


def test_mean_face_lands_on_the_arcface_frame():
    placed = mean_face_68_on(arcface_template())
    # A similarity fit of a mean face: within a couple of pixels of each ArcFace point.
    assert np.abs(five_points(placed) - PUBLISHED_ARCFACE).max() < 2.5
    with pytest.raises(InvalidRequest):
        mean_face_68_on(np.zeros((4, 2)))


def test_neutral_face_is_a_grey_face():
    face = neutral_face((96, 80))
    assert face.shape == (96, 80, 3) and face.dtype == np.uint8
    assert (face[..., 0] == face[..., 1]).all() and (face[..., 1] == face[..., 2]).all()
    points = mean_face_68((96, 80))
    cheek = np.round((points[3] + points[30]) / 2).astype(int)  # halfway from jaw to nose tip
    pupil = np.round(points[36:42].mean(axis=0)).astype(int)
    assert face[cheek[1], cheek[0], 0] > face[pupil[1], pupil[0], 0] + 60
    assert face[cheek[1], cheek[0], 0] > face[0, 0, 0] + 60  # skin over background
    with pytest.raises(InvalidRequest):
        neutral_face((96, 80), np.zeros((5, 2)))
