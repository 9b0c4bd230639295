"""Test helper: a known affine warp p = M q + t (xy pixels) of images and points."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import affine_transform

SWAP = np.array([[0.0, 1.0], [1.0, 0.0]])  # (x, y) <-> (row, col)


def warp_points(points: np.ndarray, matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ np.asarray(matrix).T + shift


def warp_image(image: np.ndarray, matrix: np.ndarray, shift: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """J(p) = I(M⁻¹(p − t)) on a frame of `shape`, bilinear, 0 outside I (scipy works in (row, col))."""
    inverse = np.linalg.inv(matrix)
    rc_matrix = SWAP @ inverse @ SWAP
    rc_offset = -SWAP @ inverse @ np.asarray(shift, dtype=np.float64)
    channels = [affine_transform(image[..., c].astype(np.float64), rc_matrix, rc_offset, output_shape=shape, order=1)
                for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


def rotation(degrees: float, scale: float = 1.0, shear: float = 0.0) -> np.ndarray:
    angle = np.deg2rad(degrees)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return scale * turn @ np.array([[1.0, shear], [0.0, 1.0]])
