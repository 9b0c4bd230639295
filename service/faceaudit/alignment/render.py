"""A neutral grey face drawn from 68-point landmarks: the backdrop of canonical maps (CIS, CMS)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from faceaudit.alignment.correspondence import Shape, check_shape
from faceaudit.alignment.templates import mean_face_68
from faceaudit.errors import InvalidRequest

BACKGROUND, SKIN, FEATURE, EYE_WHITE, LIPS = 60, 200, 95, 235, 150  # grey levels
SUPERSAMPLE = 4  # drawn this much larger, then downsampled (antialiasing)
FOREHEAD = 0.75  # top of the head above the jaw's ends, as a fraction of the chin's depth below them


def neutral_face(shape: Shape = (112, 112), landmarks68: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB (H, W, 3) grey face: contour with forehead, brows, eyes, nose and lips.

    `landmarks68` (68, 2) in the frame's pixels (iBUG 300-W order) default to
    `mean_face_68(shape)`; pass `mean_face_68_on(arcface_template())` for ArcFace crops.
    """
    height, width = check_shape(shape, "shape")
    points = mean_face_68((height, width)) if landmarks68 is None else np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise InvalidRequest("landmarks68", f"expected 68 finite (x, y) points, got shape {points.shape}")
    big = (points + 0.5) * SUPERSAMPLE  # pixel-centre coordinates -> Pillow's corner coordinates
    line = max(1, round(min(height, width) * SUPERSAMPLE / 60))
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.polygon(_xy(_face_outline(big)), fill=SKIN)
    for brow in (big[17:22], big[22:27]):
        draw.line(_xy(brow), fill=FEATURE, width=2 * line, joint="curve")
    for eye in (big[36:42], big[42:48]):
        draw.polygon(_xy(eye), fill=EYE_WHITE, outline=FEATURE, width=line)
        centre, radius = eye.mean(axis=0), 0.15 * float(np.ptp(eye[:, 0]))
        draw.ellipse(_xy(np.stack([centre - radius, centre + radius])), fill=FEATURE)
    draw.line(_xy(big[27:31]), fill=FEATURE, width=line)
    draw.line(_xy(big[31:36]), fill=FEATURE, width=line, joint="curve")
    draw.polygon(_xy(big[48:60]), fill=LIPS, outline=FEATURE, width=line)
    draw.line(_xy(np.vstack([big[60:68], big[60:61]])), fill=FEATURE, width=line)
    grey = np.asarray(canvas.resize((width, height), Image.LANCZOS))
    return np.repeat(grey[..., None], 3, axis=2)


def _face_outline(points: np.ndarray) -> np.ndarray:
    """The jaw (0-16) closed over the top by a half ellipse through its two ends: the forehead."""
    left, right, chin = points[0], points[16], points[8]
    centre = (left + right) / 2.0
    radius_x = float(np.linalg.norm(right - left)) / 2.0
    radius_y = FOREHEAD * float(chin[1] - centre[1])
    angles = np.linspace(0.0, np.pi, 32)
    arc = centre + np.column_stack([radius_x * np.cos(angles), -radius_y * np.sin(angles)])
    return np.vstack([points[:17], arc[1:-1]])


def _xy(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]
