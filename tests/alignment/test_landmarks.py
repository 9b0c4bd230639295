"""LandmarkAligner's absolute size floor: a face a few pixels across is refused whatever its shape."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.alignment import ARCFACE_112, LandmarkAligner
from faceaudit.alignment.landmarks import MIN_SPAN_PX
from faceaudit.errors import InvalidRequest

TEMPLATE = ARCFACE_112 * (64 / 112)
IMAGE = np.zeros((64, 64, 3))


def shrunk_face(span: float) -> np.ndarray:
    """The template scaled about its centre so that its narrower side spans `span` pixels: the same shape,
    so every triangle keeps the same area ratio and the relative (collapse) test cannot object."""
    centre = TEMPLATE.mean(axis=0)
    return centre + (TEMPLATE - centre) * (span / spans(TEMPLATE).min())


def spans(points: np.ndarray) -> np.ndarray:
    return points.max(axis=0) - points.min(axis=0)


def test_the_fuzz_reviews_face_inside_a_fifth_of_a_pixel_is_refused_naming_the_landmarks():
    tiny = np.array([[32, 32], [32.2, 32], [32.1, 32.1], [32, 32.2], [32.2, 32.2]])  # fuzz_explain.py's case
    with pytest.raises(InvalidRequest, match="span only 0.2 x 0.2 pixels") as info:
        LandmarkAligner(TEMPLATE, (64, 64), margin=0.5).correspond(IMAGE, tiny)
    assert info.value.field == "landmarks"


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_a_well_shaped_face_below_the_pixel_floor_is_refused_and_one_just_above_is_aligned(margin):
    aligner = LandmarkAligner(TEMPLATE, (64, 64), margin=margin)
    below, above = shrunk_face(MIN_SPAN_PX * 0.99), shrunk_face(MIN_SPAN_PX * 1.01)
    assert spans(below).min() < MIN_SPAN_PX <= spans(above).min() and spans(below).max() > MIN_SPAN_PX

    with pytest.raises(InvalidRequest) as info:
        aligner.correspond(IMAGE, below)
    assert info.value.field == "landmarks" and "at least 2 pixels" in str(info.value)

    mapped, canonical = aligner.correspond(IMAGE, above).points(4)
    assert len(canonical) > 0
    # One similarity maps the template onto the small face: canonical points land scaled about the centre.
    scale = spans(above).min() / spans(TEMPLATE).min()
    np.testing.assert_allclose(mapped, above.mean(axis=0) + (canonical - TEMPLATE.mean(axis=0)) * scale, atol=1e-6)
