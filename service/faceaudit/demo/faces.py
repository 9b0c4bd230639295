"""Render a synthetic face with exact landmarks and part masks.

The face is built in the canonical 112×112 ArcFace frame (`faceaudit.demo.geometry`), every
polygon is mapped by the one affine of the nuisance (`nuisance_transform`) and drawn
`SUPERSAMPLE`× larger with Pillow, then box-averaged down (antialiasing). The returned landmarks
are the same canonical points mapped by the same affine, so they are exact; masks are the
majority label of each pixel's supersamples. Lighting and noise are applied last, in the image
frame. Points are (x, y) pixels with (0, 0) the centre of the top-left pixel.
"""

from __future__ import annotations

import numbers

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from faceaudit.alignment.templates import five_points
from faceaudit.demo import geometry
from faceaudit.demo.params import CUE_COLOUR, RGB, FaceParams
from faceaudit.errors import InvalidRequest

SUPERSAMPLE = 4
LABELS: tuple[str, ...] = ("background", "skin", "hair", "brows", "eyes", "nose", "mouth", "accessory")
MASKS: tuple[str, ...] = LABELS[1:]  # the part masks of `Rendered.masks`: disjoint, one label per pixel
_LABEL = {name: index for index, name in enumerate(LABELS)}
EYE_WHITE, PUPIL, LID = (235, 233, 228), (15, 15, 15), (70, 45, 40)
MAKEUP_ALPHA = 0.75


@dataclass(frozen=True, eq=False)
class Rendered:
    """A rendered face.

    image: uint8 RGB (size, size, 3). landmarks68: (68, 2) iBUG 300-W order; landmarks5: (5, 2)
    ArcFace order (eye centres, nose tip, mouth corners; `five_points` of landmarks68). masks: one
    boolean (size, size) per name in MASKS, pairwise disjoint (with the background they tile the
    image). cue_mask: where the planted attribute is drawn when `identity.makeup` is set (the
    upper eyelids), whether or not it is set (pixels any supersample of which it covers).
    labels: (size, size) index into LABELS, the majority of each pixel's supersamples (masks are
    its indicator images); fine_labels: the labels of the supersamples themselves,
    (size·SUPERSAMPLE, size·SUPERSAMPLE). transform: the affine (2, 3) from the canonical
    112-pixel frame to this image.
    """

    image: np.ndarray
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    masks: dict[str, np.ndarray]
    cue_mask: np.ndarray
    labels: np.ndarray
    fine_labels: np.ndarray
    transform: np.ndarray
    params: FaceParams
    seed: int
    size: int


MAX_SIZE = 1024  # the canvas is drawn 4× larger: 1024 px is already a 4096² RGB image


def render(params: FaceParams, size: int = 112, *, seed: int = 0) -> Rendered:
    """Draw the face of `params` at size×size; `seed` drives the pixel noise only."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 16 <= size <= MAX_SIZE:
        raise InvalidRequest("size", f"{size!r} must be an integer in 16..{MAX_SIZE} pixels")
    size = int(size)
    identity, nuisance = params.identity, params.nuisance
    canonical = geometry.face_landmarks(identity, nuisance)
    shapes = geometry.outlines(canonical, identity)
    transform = geometry.nuisance_transform(nuisance, size)
    canvas = _Canvas(size, transform, nuisance.background)
    _draw(canvas, shapes, params)
    image = _finish(canvas.rgb(), params, seed)
    labels = canvas.labels()
    landmarks68 = geometry.apply(transform, canonical)
    return Rendered(
        image=image, landmarks68=landmarks68, landmarks5=five_points(landmarks68),
        masks={name: labels == _LABEL[name] for name in MASKS}, cue_mask=canvas.coverage(shapes.cue),
        labels=labels, fine_labels=np.asarray(canvas.label), transform=transform, params=params, seed=seed, size=size,
    )


class _Canvas:
    """Supersampled RGB and label images; polygons arrive in canonical coordinates."""

    def __init__(self, size: int, transform: np.ndarray, background: RGB) -> None:
        self.size, self.transform = size, transform
        big = (size * SUPERSAMPLE, size * SUPERSAMPLE)
        self.image = Image.new("RGB", big, tuple(background))
        self.label = Image.new("L", big, _LABEL["background"])

    def xy(self, polygon: np.ndarray) -> list[tuple[float, float]]:
        """Canonical points → Pillow's supersampled corner coordinates."""
        big = (geometry.apply(self.transform, polygon) + 0.5) * SUPERSAMPLE
        return [(float(x), float(y)) for x, y in big]

    def px(self, length: float) -> float:
        """A canonical length in supersampled pixels."""
        return length * float(np.sqrt(abs(np.linalg.det(self.transform[:, :2])))) * SUPERSAMPLE

    def mask(self, polygons: Sequence[np.ndarray], holes: Sequence[np.ndarray] = ()) -> Image.Image:
        mask = Image.new("L", self.image.size, 0)
        draw = ImageDraw.Draw(mask)
        for polygon in polygons:
            draw.polygon(self.xy(polygon), fill=255)
        for hole in holes:
            draw.polygon(self.xy(hole), fill=0)
        return mask

    def layer(self, label: str | None, polygons: Sequence[np.ndarray], fill: RGB,
              details: Callable[[ImageDraw.ImageDraw], None] | None = None, holes: Sequence[np.ndarray] = ()) -> None:
        """Paint `fill` (and `details`, drawn on the same layer) inside the polygons only, and
        give them `label` (None keeps the labels)."""
        mask = self.mask(polygons, holes)
        layer = Image.new("RGB", self.image.size, _rgb(fill))
        if details is not None:
            details(ImageDraw.Draw(layer))
        self.image.paste(layer, (0, 0), mask)
        if label is not None:
            self.label.paste(_LABEL[label], (0, 0), mask)

    def coverage_of(self, fine: np.ndarray) -> np.ndarray:
        """Pixels any supersample of which is set in the supersampled boolean image `fine`."""
        return fine.reshape(self.size, SUPERSAMPLE, self.size, SUPERSAMPLE).any(axis=(1, 3))

    def rgb(self) -> np.ndarray:
        big = np.asarray(self.image, dtype=np.float64)
        return big.reshape(self.size, SUPERSAMPLE, self.size, SUPERSAMPLE, 3).mean(axis=(1, 3))

    def labels(self) -> np.ndarray:
        """The majority label of each pixel's supersamples (ties go to the lower label)."""
        big = np.asarray(self.label).reshape(self.size, SUPERSAMPLE, self.size, SUPERSAMPLE)
        counts = np.stack([(big == k).sum(axis=(1, 3)) for k in range(len(LABELS))])
        return counts.argmax(axis=0).astype(np.uint8)

    def coverage(self, polygons: Sequence[np.ndarray]) -> np.ndarray:
        """Pixels any supersample of which the polygons cover."""
        return self.coverage_of(np.asarray(self.mask(polygons)) > 0)


def _draw(canvas: _Canvas, shapes: geometry.Outlines, params: FaceParams) -> None:
    """The parts back to front; a later part covers an earlier one (labels included)."""
    identity = params.identity
    tone = np.array(identity.skin.tone, dtype=np.float64)
    hair = identity.hair.colour
    if shapes.hair_back is not None:
        canvas.layer("hair", [shapes.hair_back], hair)
    canvas.layer("skin", [shapes.neck], tone * 0.88)
    canvas.layer("skin", [shapes.head], tone)
    if shapes.hair_cap is not None:
        canvas.layer("hair", [shapes.hair_cap], hair)
    if shapes.mark is not None:
        canvas.layer("accessory", [shapes.mark], (75, 50, 40))
    if identity.makeup:
        canvas.layer(None, list(shapes.cue), MAKEUP_ALPHA * np.array(CUE_COLOUR) + (1 - MAKEUP_ALPHA) * tone)
    canvas.layer("nose", [shapes.nose], tone * 0.95, _nose_details(canvas, shapes, tone))
    lips = np.array(identity.mouth.colour, dtype=np.float64)
    canvas.layer("mouth", [shapes.mouth], lips, lambda draw: draw.line(canvas.xy(shapes.mouth_line), fill=_rgb(lips * 0.45), width=round(canvas.px(1.0))))
    if shapes.glasses is not None:
        rims = shapes.glasses
        canvas.layer("accessory", [rims[0], rims[2], rims[4]], identity.accessory.colour, holes=[rims[1], rims[3]])
    canvas.layer("eyes", list(shapes.eye_regions), LID, _eye_details(canvas, shapes, identity.eyes.iris))
    canvas.layer("brows", list(shapes.brows), identity.brows.colour)


def _nose_details(canvas: _Canvas, shapes: geometry.Outlines, tone: np.ndarray) -> Callable[[ImageDraw.ImageDraw], None]:
    def details(draw: ImageDraw.ImageDraw) -> None:
        for nostril in shapes.nostrils:
            draw.polygon(canvas.xy(nostril), fill=_rgb(tone * 0.45))
        top, bottom = shapes.nose[0:2].mean(axis=0), shapes.nose[[2, 8]].mean(axis=0)
        draw.line(canvas.xy(np.array([top + [1.2, 2.0], bottom + [1.0, 0.0]])), fill=_rgb(np.minimum(tone * 1.08, 255)), width=round(canvas.px(1.2)))
    return details


def _eye_details(canvas: _Canvas, shapes: geometry.Outlines, iris: RGB) -> Callable[[ImageDraw.ImageDraw], None]:
    def details(draw: ImageDraw.ImageDraw) -> None:
        for eye, ring in zip(shapes.eyes, shapes.irises):
            draw.polygon(canvas.xy(eye), fill=EYE_WHITE)
            draw.polygon(canvas.xy(ring), fill=tuple(iris))
            centre = ring.mean(axis=0)
            draw.polygon(canvas.xy(centre + 0.45 * (ring - centre)), fill=PUPIL)
    return details


def _finish(rgb: np.ndarray, params: FaceParams, seed: int) -> np.ndarray:
    """Lighting gradient, then Gaussian noise from `seed`, rounded to uint8."""
    nuisance = params.nuisance
    size = rgb.shape[0]
    angle, strength = nuisance.light
    ys, xs = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    gain = 1.0 + strength * (xs * np.cos(angle) + ys * np.sin(angle)) / size
    out = rgb * gain[..., None]
    if nuisance.noise_sigma > 0:
        out = out + np.random.default_rng(seed).normal(0.0, nuisance.noise_sigma, size=out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _rgb(colour: Sequence[float] | np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(round(min(max(float(v), 0.0), 255.0))) for v in colour)
    return r, g, b
