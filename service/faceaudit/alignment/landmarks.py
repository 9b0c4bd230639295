"""Dense piecewise-affine alignment from K facial landmarks onto a canonical template of K points.

The template is triangulated once (Delaunay, scipy.spatial); each image's landmarks move the
triangle corners, and every canonical point maps through the affine map of its triangle, so an
affine warp of the face is reproduced exactly. `margin` extends the face region beyond the
template's convex hull: the hull corners, pushed out from the template centroid c to
c + (1 + margin)(v - c), become extra vertices whose input positions come from the
least-squares affine fit of the landmarks to the template. Five-point templates need a margin
(about 0.5) to cover more than the eyes-to-mouth quadrilateral.

With 68-point (iBUG 300-W) markup, a closed mouth can collapse or cross the inner lips (points
60-67), which is refused as a degenerate triangulation; `templates.WITHOUT_INNER_LIPS_68` selects
the other 60 points, for template and landmarks alike.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError

from faceaudit.alignment.correspondence import Correspondence, Shape, check_shape, signed_areas
from faceaudit.errors import InvalidRequest

# A triangle is collapsed when its area ratio (input / canonical) is below this fraction of the
# face's typical ratio, and flipped when the ratio is negative.
COLLAPSED = 1e-3
# A face whose landmarks span fewer pixels than this along x or y has no features to explain (the
# eyes would be under two pixels apart): refused whatever its shape, which the relative test above
# cannot see.
MIN_SPAN_PX = 2.0


class LandmarkAligner:
    """Aligner for faces with K landmarks per image and a canonical template of the same K points."""

    def __init__(self, template: np.ndarray, canonical_shape: Shape, *, margin: float = 0.0) -> None:
        self.canonical_shape = check_shape(canonical_shape, "canonical_shape")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin <= 10.0:
            raise InvalidRequest("margin", f"{margin!r} must be a number in [0, 10] (a fraction of the face's size)")
        self.template = _check_template(template)
        self.margin = float(margin)
        self._anchors = _margin_anchors(self.template, self.margin)
        self._triangulation = Delaunay(np.vstack([self.template, self._anchors]))
        self._canonical_areas = signed_areas(self._triangulation.points[self._triangulation.simplices])

    def correspond(self, image: np.ndarray, landmarks: np.ndarray, *, given_in: Shape | None = None) -> Correspondence:
        """The correspondence of one image (only its shape is read) with its (K, 2) landmarks: in the
        image's pixels, or with `given_in` in those of the image of that shape it was resized from
        (moved by `rescale_landmarks`; refusals then name the frame the points were given in)."""
        input_shape = check_shape(np.shape(image)[:2], "image")
        if given_in is None:
            points = self._check_landmarks(landmarks, input_shape)
        else:
            sent_shape = check_shape(given_in, "given_in")
            sent = self._check_landmarks(landmarks, sent_shape)
            edge = np.array([input_shape[1], input_shape[0]]) - 0.5
            points = np.clip(rescale_landmarks(sent, sent_shape, input_shape), -0.5, edge)  # rounding at the edge
            _check_span(points, f"{_frame(input_shape)} image the points were rescaled to from the "
                                f"{_frame(sent_shape)} image they were given in ({_spans(sent)} there)")
        vertices = np.vstack([points, _affine_fit(self.template, points, self._anchors)])
        self._check_triangles(vertices)
        return Correspondence(self._triangulation, vertices, self.canonical_shape, input_shape)

    def _check_landmarks(self, landmarks: np.ndarray, shape: Shape) -> np.ndarray:
        """Landmarks as float64 (K, 2): the template's count, finite, inside the image, a few pixels wide and high."""
        try:
            points = np.asarray(landmarks, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest("landmarks", f"not an array of (x, y) numbers ({exc})") from exc
        count = len(self.template)
        if points.shape != (count, 2):
            raise InvalidRequest("landmarks", f"expected {count} (x, y) points to match the template, "
                                              f"got shape {points.shape}")
        if not np.isfinite(points).all():
            raise InvalidRequest("landmarks", "contain NaN or infinite coordinates")
        height, width = shape
        outside = (points < -0.5).any(axis=1) | (points[:, 0] > width - 0.5) | (points[:, 1] > height - 0.5)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            x, y = points[first]
            raise InvalidRequest("landmarks", f"point {first} at ({x:g}, {y:g}) lies outside the {width}x{height} "
                                              f"image (x in [-0.5, {width - 0.5}], y in [-0.5, {height - 0.5}])")
        _check_span(points, f"{width}x{height} image")
        return points

    def _check_triangles(self, vertices: np.ndarray) -> None:
        """Refuse landmarks that flip or collapse a triangle of the template's triangulation."""
        simplices = self._triangulation.simplices
        ratio = signed_areas(vertices[simplices]) / self._canonical_areas
        typical = float(np.median(ratio))
        bad = np.flatnonzero(ratio <= COLLAPSED * abs(typical))
        if bad.size:
            corners = [int(v) if v < len(self.template) else "margin" for v in simplices[bad[0]]]
            raise InvalidRequest("landmarks", f"points {corners} form a flipped or collapsed triangle (area "
                                              f"{ratio[bad[0]]:.3g}x the template's, typical {typical:.3g}x); "
                                              "check the landmarks' order and the template")


def _check_span(points: np.ndarray, frame: str) -> None:
    """Refuse points spanning under MIN_SPAN_PX along x or y; `frame` says which image's pixels they are in."""
    if (np.ptp(points, axis=0) < MIN_SPAN_PX).any():
        raise InvalidRequest("landmarks", f"the points span only {_spans(points)} (x by y) in the {frame}; a face needs "
                                          f"at least {MIN_SPAN_PX:g} pixels each way")


def _spans(points: np.ndarray) -> str:
    span = np.ptp(points, axis=0)
    return f"{span[0]:.3g} x {span[1]:.3g} pixels"


def _frame(shape: Shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def rescale_landmarks(points: np.ndarray, original: Shape, resized: Shape) -> np.ndarray:
    """(K, 2) landmarks (x, y) of an image of shape `original` moved onto the same image resized to
    `resized`, by pixel centres: x_resized + ½ = (x_original + ½) · W_resized / W_original (y likewise)."""
    scale = np.array([resized[1] / original[1], resized[0] / original[0]])
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5


def _check_template(template: np.ndarray) -> np.ndarray:
    points = np.asarray(template, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.isfinite(points).all():
        raise InvalidRequest("template", f"expected K ≥ 3 finite (x, y) points, got shape {points.shape}")
    try:
        unused = Delaunay(points).coplanar
    except QhullError as exc:
        raise InvalidRequest("template", "the points are collinear: no triangle to warp") from exc
    if len(unused):
        duplicates = sorted(set(unused[:, 0].tolist()))
        raise InvalidRequest("template", f"points {duplicates} are not triangle corners (duplicates?)")
    return points


def _margin_anchors(template: np.ndarray, margin: float) -> np.ndarray:
    """The template's hull corners pushed out from its centroid by (1 + margin); none for margin 0."""
    if margin == 0.0:
        return np.zeros((0, 2))
    centre = template.mean(axis=0)
    return centre + (1.0 + margin) * (template[ConvexHull(template).vertices] - centre)


def _affine_fit(source: np.ndarray, target: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`points` mapped by the least-squares affine map taking `source` onto `target` (all (·, 2))."""
    ones = np.ones((len(source), 1))
    matrix = np.linalg.lstsq(np.hstack([source, ones]), target, rcond=None)[0]  # (3, 2)
    return np.hstack([points, np.ones((len(points), 1))]) @ matrix
