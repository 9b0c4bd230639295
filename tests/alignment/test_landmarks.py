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


def test_points_given_in_the_image_before_resizing_are_moved_by_pixel_centres():
    aligner = LandmarkAligner(TEMPLATE, (64, 64), margin=0.5)
    sent = TEMPLATE * 2 + 0.5  # the same face in a 128 x 128 photo: x there is (x + ½)/2 − ½ = TEMPLATE in 64 px

    given = aligner.correspond(IMAGE, sent, given_in=(128, 128)).points(4)
    moved = aligner.correspond(IMAGE, TEMPLATE).points(4)

    for a, b in zip(given, moved):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_a_face_too_small_once_rescaled_is_refused_naming_both_frames():
    # A 15 x 14 px face in a 1000 px photo is under a pixel across in the 64 px image the model takes.
    face = 500 + shrunk_face(14.0) - TEMPLATE.mean(axis=0)
    assert spans(face).min() >= MIN_SPAN_PX  # big enough in the photo's own pixels
    with pytest.raises(InvalidRequest) as info:
        LandmarkAligner(TEMPLATE, (64, 64), margin=0.5).correspond(IMAGE, face, given_in=(1000, 1000))
    message = str(info.value)
    assert info.value.field == "landmarks"
    sent_x, sent_y = spans(face)
    model_x, model_y = spans(face) * 64 / 1000
    assert (f"span only {model_x:.3g} x {model_y:.3g} pixels (x by y) in the 64x64 image the points were rescaled to "
            f"from the 1000x1000 image they were given in ({sent_x:.3g} x {sent_y:.3g} pixels there)") in message


def test_points_outside_the_image_they_were_given_in_are_refused_in_its_frame():
    sent = TEMPLATE * 2
    sent[0] = [130.0, 40.0]  # outside the 128 px photo, though inside a 256 px frame of the same face
    with pytest.raises(InvalidRequest, match=r"point 0 at \(130, 40\) lies outside the 128x128 image"):
        LandmarkAligner(TEMPLATE, (64, 64), margin=0.5).correspond(IMAGE, sent, given_in=(128, 128))
