"""Geometry of a synthetic face: landmarks and part outlines in the canonical frame, and the one
affine transform that places them in the image.

Conventions: points are (x, y) pixels with (0, 0) the centre of the top-left pixel (as in
`faceaudit.alignment.correspondence`). The canonical frame is the 112×112 ArcFace crop: the neutral
face is `mean_face_68_on(arcface_template(112))`, the 68-point mean face (iBUG 300-W order) placed on
the five-point ArcFace layout. Identity parts and expression/yaw move landmarks in that frame;
rotation, scale and shift are then applied to every point at once by `nuisance_transform`, and
the result is rescaled from 112 to the rendered size. Every outline is built from the landmarks,
so the drawing, the masks and the returned landmarks share one geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.alignment.templates import arcface_template, mean_face_68_on
from faceaudit.demo.params import Identity, Nuisance

CANONICAL = 112  # side of the canonical frame in pixels
NEUTRAL_68 = mean_face_68_on(arcface_template(CANONICAL))
CENTRE = np.array([(CANONICAL - 1) / 2.0] * 2)  # rotation and scale are about the image centre

# Horizontal yaw shift per landmark as a fraction of `Nuisance.yaw` (the nose tip moves most).
YAW_DEPTH = np.concatenate([
    np.zeros(17),               # jaw 0-16: the outline stays
    np.full(10, 0.5),           # brows 17-26
    [0.6, 0.7, 0.8, 1.0],       # bridge 27-30 (30 is the tip)
    np.full(5, 0.85),           # nostrils 31-35
    np.full(12, 0.5),           # eyes 36-47
    np.full(20, 0.6),           # lips 48-67
])
FRINGE_Y = NEUTRAL_68[36:48, 1].mean() - 22.0  # lowest hairline: above the highest brow there can be
ELLIPSE_POINTS = 48


def face_landmarks(identity: Identity, nuisance: Nuisance) -> np.ndarray:
    """The 68 landmarks (68, 2) in the canonical frame: identity parts, then expression, then yaw."""
    points = NEUTRAL_68.copy()
    _shape_jaw(points, identity)
    _shape_brows(points, identity)
    _shape_eyes(points, identity)
    _shape_nose(points, identity)
    _shape_mouth(points, identity, nuisance.expression)
    points[:, 0] += YAW_DEPTH * nuisance.yaw
    return points


def _shape_jaw(points: np.ndarray, identity: Identity) -> None:
    jaw = points[0:17]
    top = (jaw[0] + jaw[16]) / 2.0
    jaw[:, 0] = top[0] + (jaw[:, 0] - top[0]) * identity.skin.jaw_width
    jaw[:, 1] = top[1] + (jaw[:, 1] - top[1]) * identity.skin.chin


def _shape_brows(points: np.ndarray, identity: Identity) -> None:
    brows = identity.brows
    for start in (17, 22):
        brow = points[start:start + 5]
        centre = brow.mean(axis=0)
        brow[:] = centre + (brow - centre) * brows.length
        brow[:, 1] -= brows.raise_px + brows.arch * np.array([0.0, 0.7, 1.0, 0.7, 0.0])


def _shape_eyes(points: np.ndarray, identity: Identity) -> None:
    eyes = identity.eyes
    for start, side in ((36, -1.0), (42, 1.0)):
        eye = points[start:start + 6]
        centre = eye.mean(axis=0)
        eye[:] = centre + (eye - centre) * [eyes.size, eyes.size * eyes.openness]
        eye[:, 0] += side * eyes.spacing / 2.0


def _shape_nose(points: np.ndarray, identity: Identity) -> None:
    nose = points[27:36]
    nose[1:, 1] = nose[0, 1] + (nose[1:, 1] - nose[0, 1]) * identity.nose.length
    base = points[31:36]
    base[:, 0] = base[2, 0] + (base[:, 0] - base[2, 0]) * identity.nose.width


def _shape_mouth(points: np.ndarray, identity: Identity, expression: float) -> None:
    mouth = points[48:68]
    centre_x = (mouth[0, 0] + mouth[6, 0]) / 2.0  # between the corners (48, 54)
    line_y = points[60:68, 1].mean()
    mouth[:, 0] = centre_x + (mouth[:, 0] - centre_x) * identity.mouth.width
    lips = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]  # the outer contour without its corners
    mouth[lips, 1] = line_y + (mouth[lips, 1] - line_y) * identity.mouth.lips
    half = (mouth[6, 0] - mouth[0, 0]) / 2.0
    mouth[:, 1] -= expression * ((mouth[:, 0] - centre_x) / half) ** 2  # the corners rise by `expression`


def nuisance_transform(nuisance: Nuisance, size: int = CANONICAL) -> np.ndarray:
    """The affine (2, 3) taking canonical points to image pixels of a size×size render:
    p ↦ k·(R·s·(p − c) + c + shift + ½) − ½, with R the counter-clockwise (on screen) rotation by
    `rotation_deg`, s = `scale`, c the canonical image centre and k = size/112."""
    angle = np.deg2rad(nuisance.rotation_deg)
    cos, sin = np.cos(angle), np.sin(angle)
    linear = nuisance.scale * np.array([[cos, sin], [-sin, cos]])  # y points down: this turns counter-clockwise
    offset = CENTRE - linear @ CENTRE + np.asarray(nuisance.shift, dtype=np.float64)
    factor = size / CANONICAL
    return np.column_stack([factor * linear, factor * (offset + 0.5) - 0.5])


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`points` (..., 2) mapped by the affine `transform` (2, 3)."""
    return points @ transform[:, :2].T + transform[:, 2]


@dataclass(frozen=True)
class Outlines:
    """Closed polygons (n, 2) of each drawn part in the canonical frame, built from the landmarks."""

    head: np.ndarray
    neck: np.ndarray
    hair_back: np.ndarray | None
    hair_cap: np.ndarray | None
    brows: tuple[np.ndarray, np.ndarray]
    eyes: tuple[np.ndarray, np.ndarray]
    eye_regions: tuple[np.ndarray, np.ndarray]
    irises: tuple[np.ndarray, np.ndarray]
    nose: np.ndarray
    nostrils: tuple[np.ndarray, np.ndarray]
    mouth: np.ndarray
    mouth_line: np.ndarray
    cue: tuple[np.ndarray, np.ndarray]
    glasses: tuple[np.ndarray, ...] | None
    mark: np.ndarray | None


def outlines(points: np.ndarray, identity: Identity) -> Outlines:
    """The part polygons of a face with canonical landmarks `points` (68, 2)."""
    centre, radii = _head_ellipse(points, identity)
    eyes = (points[36:42], points[42:48])
    eye_regions = tuple(_offset(eye, 1.0) for eye in eyes)
    return Outlines(
        head=np.vstack([points[:17], _arc(centre, radii, 0.0, np.pi)[1:-1]]),
        neck=np.array([points[5], points[11], [points[11, 0] + 3, 200.0], [points[5, 0] - 3, 200.0]]),
        hair_back=_hair_back(points, centre, radii) if identity.hair.style == "long" else None,
        hair_cap=None if identity.hair.style == "bald" else _hair_cap(centre, radii, identity),
        brows=(_band(points[17:22], identity.brows.thickness), _band(points[22:27][::-1], identity.brows.thickness)),
        eyes=eyes,  # type: ignore[arg-type]
        eye_regions=eye_regions,  # type: ignore[arg-type]
        irises=tuple(_iris(eye) for eye in eyes),  # type: ignore[arg-type]
        nose=_nose(points),
        nostrils=tuple(_ellipse(points[i] + [0.0, -0.9], (1.3 * identity.nose.width, 0.8)) for i in (32, 34)),  # type: ignore[arg-type]
        mouth=_offset(points[48:60], 1.0),
        mouth_line=np.vstack([points[60:68], points[60:61]]),
        cue=tuple(_lid_band(region) for region in eye_regions),  # type: ignore[arg-type]
        glasses=_glasses(points) if identity.accessory.kind == "glasses" else None,
        mark=_mark(points, identity) if identity.accessory.kind == "mark" else None,
    )


def _head_ellipse(points: np.ndarray, identity: Identity) -> tuple[np.ndarray, tuple[float, float]]:
    """The forehead: a half ellipse through the jaw's ends, `forehead` × the chin's depth high."""
    left, right, chin = points[0], points[16], points[8]
    centre = (left + right) / 2.0
    return centre, (float(np.linalg.norm(right - left)) / 2.0, identity.skin.forehead * float(chin[1] - centre[1]))


def _arc(centre: np.ndarray, radii: tuple[float, float], start: float, stop: float, n: int = 33) -> np.ndarray:
    """Points of an ellipse from angle `start` to `stop` (0 at the right, π/2 at the top)."""
    angles = np.linspace(start, stop, n)
    return centre + np.column_stack([radii[0] * np.cos(angles), -radii[1] * np.sin(angles)])


def _ellipse(centre: np.ndarray, radii: tuple[float, float]) -> np.ndarray:
    return _arc(centre, radii, 0.0, 2 * np.pi, ELLIPSE_POINTS + 1)[:-1]


def _offset(polygon: np.ndarray, amount: float) -> np.ndarray:
    """The closed polygon with every edge moved `amount` px outwards (mitred vertices; the mitre
    of a sharp corner is capped at 2·amount, so a corner keeps at least `amount` of margin)."""
    edges = np.roll(polygon, -1, axis=0) - polygon
    normals = np.column_stack([edges[:, 1], -edges[:, 0]]) / np.linalg.norm(edges, axis=1, keepdims=True)
    x, y = polygon[:, 0], polygon[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # orientation decides which side is out
        normals = -normals
    vertex = normals + np.roll(normals, 1, axis=0)  # the two edges meeting at each vertex
    vertex /= np.linalg.norm(vertex, axis=1, keepdims=True)
    cos_half = np.clip(np.sum(vertex * normals, axis=1), 0.5, 1.0)
    return polygon + amount * vertex / cos_half[:, None]


def _band(line: np.ndarray, thickness: float) -> np.ndarray:
    """A brow: the polyline (inner end last) extended 1 px at both ends and thickened about it,
    thinning to 75 % at the outer end."""
    ends = np.vstack([line[0] - _unit(line[1] - line[0]), line, line[-1] + _unit(line[-1] - line[-2])])
    tangents = np.gradient(ends, axis=0)
    normals = np.column_stack([-tangents[:, 1], tangents[:, 0]]) / np.linalg.norm(tangents, axis=1, keepdims=True)
    half = thickness / 2.0 * np.linspace(0.75, 1.0, len(ends))[:, None]
    return np.vstack([ends + half * normals, (ends - half * normals)[::-1]])


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _iris(eye: np.ndarray) -> np.ndarray:
    width, height = np.ptp(eye[:, 0]), np.ptp(eye[:, 1])
    radius = min(0.42 * height, 0.22 * width)
    return _ellipse(eye.mean(axis=0), (radius, radius))


def _nose(points: np.ndarray) -> np.ndarray:
    """Bridge (27-30) and base (31-35) with a margin, so that every nose landmark lies inside."""
    top, tip, left, right, bottom = points[27], points[30], points[31], points[35], points[33]
    half = 3.0
    return np.array([
        top + [-half, -2.0], top + [half, -2.0], [tip[0] + half, tip[1] - 3.0],
        [right[0] + 2.0, tip[1] + 1.0], right + [1.5, 1.5], bottom + [0.0, 1.5], left + [-1.5, 1.5],
        [left[0] - 2.0, tip[1] + 1.0], [tip[0] - half, tip[1] - 3.0],
    ])


def _lid_band(eye_region: np.ndarray) -> np.ndarray:
    """The upper eyelid above an eye region (its points 0-3: corner, two upper points, corner in
    iBUG order for both eyes), 2.5 px high."""
    lid = eye_region[:4]
    return np.vstack([lid, (lid + [0.0, -2.5])[::-1]])


def _glasses(points: np.ndarray) -> tuple[np.ndarray, ...]:
    """Two rims (outer and inner ellipse, drawn as a ring) about the eye centres and a bridge."""
    rims = []
    for eye in (points[36:42], points[42:48]):
        centre = eye.mean(axis=0) + [0.0, 0.8]
        rims += [_ellipse(centre, (11.0, 7.8)), _ellipse(centre, (9.8, 6.6))]
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    y = (left[1] + right[1]) / 2.0 - 4.5
    bridge = np.array([[left[0] + 9.5, y - 0.6], [right[0] - 9.5, y - 0.6], [right[0] - 9.5, y + 0.6], [left[0] + 9.5, y + 0.6]])
    return (*rims, bridge)


def _mark(points: np.ndarray, identity: Identity) -> np.ndarray:
    eye = points[36:42] if identity.accessory.side < 0 else points[42:48]
    return _ellipse(eye.mean(axis=0) + [0.0, 14.0] + np.asarray(identity.accessory.offset), (1.5, 1.5))


def _hair_cap(centre: np.ndarray, radii: tuple[float, float], identity: Identity) -> np.ndarray:
    """Hair over the top of the head: an ellipse 2.5 px larger than the forehead's, cut by a
    hairline that dips from the temples towards the middle (zig-zag for a fringe)."""
    outer = (radii[0] + 2.5, radii[1] + 2.5)
    top = centre[1] - radii[1]
    if identity.hair.style == "fringe":
        middle = FRINGE_Y - 3.0 * (1.0 - identity.hair.hairline)
    else:
        middle = top + (0.2 + 0.25 * identity.hair.hairline) * radii[1]
    temple = min(middle + 8.0, FRINGE_Y + 2.0, centre[1] - 10.0)
    angle = float(np.arcsin(np.clip((centre[1] - temple) / outer[1], -1.0, 1.0)))
    arc = _arc(centre, outer, angle, np.pi - angle)
    xs = np.linspace(arc[-1, 0], arc[0, 0], 25)
    u = (xs - centre[0]) / (arc[0, 0] - centre[0])
    ys = temple + (middle - temple) * (1.0 - u ** 2)
    if identity.hair.style == "fringe":
        ys = ys - 2.0 * (np.arange(len(xs)) % 2)
    return np.vstack([arc, np.column_stack([xs, ys])[1:-1]])


def _hair_back(points: np.ndarray, centre: np.ndarray, radii: tuple[float, float]) -> np.ndarray:
    """Long hair behind the head: the forehead ellipse grown by 7 px, down to the mouth's height."""
    bottom = float(points[48:68, 1].mean())
    outer = (radii[0] + 7.0, radii[1] + 7.0)
    arc = _arc(centre, outer, 0.0, np.pi)
    return np.vstack([[arc[0, 0], bottom], arc, [arc[-1, 0], bottom]])
