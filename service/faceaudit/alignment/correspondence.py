"""A dense correspondence between one input face image and the canonical face frame.

Conventions: points are (x, y) in pixels with (0, 0) the centre of the top-left pixel, so an image
of shape (H, W) spans [-0.5, W - 0.5] × [-0.5, H - 0.5]; shapes are (height, width).

The mapping is piecewise affine over a triangulation of canonical vertices V_F whose input
positions are V_I: a canonical point q in triangle t with barycentric coordinates λ(q) maps to

    p = Σ_j λ_j(q) · V_I[t_j]

and an input point maps back through the same triangle the other way. Two triangles spanning the
frame give a pre-aligned crop (a pure resize); a Delaunay triangulation of a landmark template
gives a dense landmark warp (see `faceaudit.alignment.landmarks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial import Delaunay

from faceaudit.errors import InvalidRequest

Shape = tuple[int, int]  # (height, width) in pixels

_INSIDE_TOLERANCE = 1e-9  # barycentric slack: points on a shared edge belong to a triangle
_EDGE = 1e-6  # px of slack around a triangle's bounding box


class Correspondence:
    """The piecewise-affine map between one input image and the canonical frame.

    `triangulation` is a Delaunay triangulation of the canonical vertices; `input_vertices` holds
    their input positions, row for row. The caller guarantees that no input triangle is flipped
    or collapsed (`LandmarkAligner` checks this and names the landmarks at fault).
    """

    def __init__(self, triangulation: Delaunay, input_vertices: np.ndarray, canonical_shape: Shape,
                 input_shape: Shape) -> None:
        self.triangulation = triangulation
        self.input_vertices = np.asarray(input_vertices, dtype=np.float64)
        self.canonical_shape = check_shape(canonical_shape, "canonical_shape")
        self.input_shape = check_shape(input_shape, "input_shape")
        corners = self.input_vertices[triangulation.simplices]  # (T, 3, 2)
        self._input_boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)  # (T, 4)
        # λ = H_t⁻¹ (x, y, 1)ᵀ with H_t the triangle's corners as homogeneous columns.
        homogeneous = np.concatenate([corners.transpose(0, 2, 1), np.ones((len(corners), 1, 3))], axis=1)
        self._input_barycentric = np.linalg.inv(homogeneous)  # (T, 3, 3)

    @cached_property
    def scale(self) -> float:
        """√(canonical area / input area) of the mapped face: how much larger a patch is canonically.

        For a pre-aligned crop resized at a constant aspect ratio this is H_F / H_I, the factor of
        Algorithm 1, line 4 (John et al. 2021).
        """
        canonical = np.abs(signed_areas(self.triangulation.points[self.triangulation.simplices])).sum()
        mapped = np.abs(signed_areas(self.input_vertices[self.triangulation.simplices])).sum()
        return float(np.sqrt(canonical / mapped))

    def to_input_xy(self, canonical_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input positions (K, 2) of canonical points (K, 2), and which of them the map covers.

        Uses the canonical Delaunay triangulation: find_simplex, then barycentric coordinates from
        its stored affine transforms. Uncovered points map to NaN.
        """
        canonical_xy = np.asarray(canonical_xy, dtype=np.float64).reshape(-1, 2)
        simplex = self.triangulation.find_simplex(canonical_xy)
        transform = self.triangulation.transform[simplex]  # (K, 3, 2): inverse matrix, then origin
        partial = np.einsum("kij,kj->ki", transform[:, :2], canonical_xy - transform[:, 2])
        bary = np.column_stack([partial, 1.0 - partial.sum(axis=1)])
        mapped = np.einsum("kj,kjd->kd", bary, self.input_vertices[self.triangulation.simplices[simplex]])
        covered = simplex >= 0
        mapped[~covered] = np.nan
        return mapped, covered

    def to_canonical_xy(self, input_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical positions (K, 2) of input points (K, 2), and which of them the map covers.

        Input triangles form no Delaunay triangulation of their own, so each triangle takes the
        points inside its bounding box (found on the points sorted by x) and keeps those with
        non-negative barycentric coordinates. Uncovered points map to NaN.
        """
        input_xy = np.asarray(input_xy, dtype=np.float64).reshape(-1, 2)
        mapped = np.full_like(input_xy, np.nan)
        covered = np.zeros(len(input_xy), dtype=bool)
        order = np.argsort(input_xy[:, 0], kind="stable")
        sorted_x = input_xy[order, 0]
        canonical_corners = self.triangulation.points[self.triangulation.simplices]  # (T, 3, 2)
        for box, to_barycentric, corners in zip(self._input_boxes, self._input_barycentric, canonical_corners):
            low = np.searchsorted(sorted_x, box[0] - _EDGE)
            candidates = order[low:np.searchsorted(sorted_x, box[2] + _EDGE, side="right")]
            y = input_xy[candidates, 1]
            candidates = candidates[(y >= box[1] - _EDGE) & (y <= box[3] + _EDGE) & ~covered[candidates]]
            bary = np.column_stack([input_xy[candidates], np.ones(len(candidates))]) @ to_barycentric.T
            inside = bary.min(axis=1) >= -_INSIDE_TOLERANCE
            mapped[candidates[inside]] = bary[inside] @ corners
            covered[candidates[inside]] = True
        return mapped, covered

    def points(self, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """Correspondence points (input_xy, canonical_xy), each (K, 2), for CIS.

        Canonical pixel centres every `stride` px (the grid centred in the frame) that the map
        covers and whose input position lies inside the input image.
        """
        rows = _centred_range(self.canonical_shape[0], stride)
        cols = _centred_range(self.canonical_shape[1], stride)
        grid_x, grid_y = np.meshgrid(cols, rows)
        canonical_xy = np.column_stack([grid_x.ravel(), grid_y.ravel()]).astype(np.float64)
        input_xy, covered = self.to_input_xy(canonical_xy)
        keep = covered & _inside_frame(input_xy, self.input_shape)
        return input_xy[keep], canonical_xy[keep]

    def to_input(self, canonical_map: np.ndarray) -> np.ndarray:
        """A canonical-frame map (H_F, W_F) resampled onto the input frame (bilinear; 0 off the face)."""
        return _resample(self._checked(canonical_map, self.canonical_shape, "canonical_map"),
                         self.input_shape, self.to_canonical_xy)

    def to_canonical(self, input_map: np.ndarray) -> np.ndarray:
        """An input-frame map (H_I, W_I) resampled onto the canonical frame (bilinear; 0 off the face)."""
        return _resample(self._checked(input_map, self.input_shape, "input_map"), self.canonical_shape, self.to_input_xy)

    @staticmethod
    def _checked(values: np.ndarray, shape: Shape, field: str) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.shape != tuple(shape):
            raise InvalidRequest(field, f"expected a map of shape {tuple(shape)}, got {values.shape}")
        return values


@dataclass(frozen=True)
class PreAligned:
    """Aligner for crops that are already aligned: the crop frame is the canonical frame.

    The correspondence is the identity when the crop has the canonical shape and a resize
    (x_F + 0.5) = (x_I + 0.5) · W_F / W_I otherwise (likewise for y).
    """

    canonical_shape: Shape

    def __post_init__(self) -> None:
        object.__setattr__(self, "canonical_shape", check_shape(self.canonical_shape, "canonical_shape"))

    def correspond(self, image: np.ndarray) -> Correspondence:
        input_shape = check_shape(np.shape(image)[:2], "image")
        return Correspondence(Delaunay(frame_corners(self.canonical_shape)), frame_corners(input_shape),
                              self.canonical_shape, input_shape)


def check_shape(shape: Any, field: str) -> Shape:
    """A (height, width) pair of whole pixels ≥ 1, or InvalidRequest naming `field`."""
    try:
        height, width = shape
    except (TypeError, ValueError):
        height = width = None
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in (height, width)):
        raise InvalidRequest(field, f"expected (height, width) in whole pixels ≥ 1, got {shape!r}")
    return int(height), int(width)


def frame_corners(shape: Shape) -> np.ndarray:
    """The four corners (4, 2) of a frame's extent, in pixel-centre coordinates."""
    height, width = shape
    return np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])


def signed_areas(triangles: np.ndarray) -> np.ndarray:
    """Signed areas (T,) of triangles (T, 3, 2): positive when counter-clockwise in (x, y)."""
    u, v = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    return 0.5 * (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])


def _centred_range(size: int, stride: int) -> np.ndarray:
    """Pixel indices every `stride` px, with the leftover split evenly between both ends."""
    return np.arange(((size - 1) % stride) // 2, size, stride)


def _inside_frame(xy: np.ndarray, shape: Shape) -> np.ndarray:
    height, width = shape
    with np.errstate(invalid="ignore"):  # NaN (uncovered) points compare False
        return (xy[:, 0] >= -0.5) & (xy[:, 0] <= width - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= height - 0.5)


def _resample(values: np.ndarray, shape: Shape,
              locate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """`values` sampled bilinearly at `locate(pixel centres of shape)`; 0 where that is off the map."""
    rows, cols = np.indices(shape)
    source_xy, covered = locate(np.column_stack([cols.ravel(), rows.ravel()]).astype(np.float64))
    keep = covered & _inside_frame(source_xy, values.shape)
    out = np.zeros(shape[0] * shape[1])
    out[keep] = map_coordinates(values, [source_xy[keep, 1], source_xy[keep, 0]], order=1, mode="nearest")
    return out.reshape(shape).astype(np.float32)
