"""Parameters of a synthetic face: identity parts and nuisance factors, with their samplers.

An `Identity` is a combination of part parameters (`PARTS`); a `Nuisance` holds everything that
varies between images of one identity. Lengths are pixels of the canonical 112×112 ArcFace frame
(see `faceaudit.demo.geometry`), colours are RGB triples in 0-255. Samplers take a
`numpy.random.Generator` and never touch global random state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from faceaudit.errors import InvalidRequest

RGB = tuple[int, int, int]
Part = Literal["skin", "hair", "brows", "eyes", "nose", "mouth", "accessory"]
PARTS: tuple[Part, ...] = ("skin", "hair", "brows", "eyes", "nose", "mouth", "accessory")

SKIN_TONES: tuple[RGB, ...] = ((241, 204, 178), (226, 182, 150), (198, 146, 110), (160, 110, 80), (122, 82, 58), (90, 60, 44))
HAIR_COLOURS: tuple[RGB, ...] = ((30, 24, 20), (70, 45, 30), (120, 80, 45), (185, 150, 95), (150, 60, 30), (160, 160, 160))
IRIS_COLOURS: tuple[RGB, ...] = ((70, 45, 30), (50, 90, 140), (70, 110, 70), (110, 90, 60), (40, 40, 40))
LIP_COLOURS: tuple[RGB, ...] = ((170, 90, 90), (190, 110, 110), (140, 70, 70), (200, 120, 130), (120, 60, 55))
HAIR_STYLES = ("bald", "short", "fringe", "long")
ACCESSORIES = ("none", "glasses", "mark")
CUE_COLOUR: RGB = (80, 50, 170)  # the planted attribute: violet eye make-up on the upper lids


def _check(part: object, *, positive: tuple[str, ...] = (), choices: dict[str, tuple[str, ...]] | None = None) -> None:
    """InvalidRequest naming the field: every float finite, the `positive` ones > 0, choices known."""
    for f in dataclasses.fields(part):  # type: ignore[arg-type]
        value = getattr(part, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not np.isfinite(v) for v in numbers):
            raise InvalidRequest(f.name, f"{value!r} must be finite")
    for name in positive:
        if not getattr(part, name) > 0:
            raise InvalidRequest(name, f"{getattr(part, name)!r} must be positive")
    for name, allowed in (choices or {}).items():
        if getattr(part, name) not in allowed:
            raise InvalidRequest(name, f"{getattr(part, name)!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Skin:
    """Head shape and skin tone. `jaw_width` scales the jaw (0-16) horizontally about its centre,
    `chin` scales its depth below the eye line, `forehead` is the height of the head above the jaw's
    ends as a fraction of the chin's depth below them."""

    tone: RGB = SKIN_TONES[1]
    jaw_width: float = 1.0
    chin: float = 1.0
    forehead: float = 0.62

    def __post_init__(self) -> None:
        _check(self, positive=("jaw_width", "chin", "forehead"))


@dataclass(frozen=True)
class Hair:
    """`style` in HAIR_STYLES; `hairline` in [0, 1] lowers the hairline (0 high, 1 low)."""

    style: str = "short"
    colour: RGB = HAIR_COLOURS[1]
    hairline: float = 0.5

    def __post_init__(self) -> None:
        _check(self, choices={"style": HAIR_STYLES})


@dataclass(frozen=True)
class Brows:
    """`thickness` px; `arch` px raises the middle of each brow; `raise_px` lifts the whole brow;
    `length` scales it about its centre."""

    thickness: float = 2.4
    arch: float = 0.5
    raise_px: float = 0.0
    length: float = 1.0
    colour: RGB = (50, 35, 28)

    def __post_init__(self) -> None:
        _check(self, positive=("thickness", "length"))


@dataclass(frozen=True)
class Eyes:
    """`size` scales each eye about its centre, `openness` its height only; `spacing` px widens the
    distance between the eye centres (each eye moves by half)."""

    size: float = 1.0
    openness: float = 1.0
    spacing: float = 0.0
    iris: RGB = IRIS_COLOURS[0]

    def __post_init__(self) -> None:
        _check(self, positive=("size", "openness"))


@dataclass(frozen=True)
class Nose:
    """`length` scales points 28-35 vertically from the bridge top (27); `width` scales the
    nostrils (31-35) horizontally about 33."""

    length: float = 1.0
    width: float = 1.0

    def __post_init__(self) -> None:
        _check(self, positive=("length", "width"))


@dataclass(frozen=True)
class Mouth:
    """`width` scales the lips horizontally about their centre; `lips` scales the outer lip
    contour vertically away from the inner one (lip thickness)."""

    width: float = 1.0
    lips: float = 1.0
    colour: RGB = LIP_COLOURS[0]

    def __post_init__(self) -> None:
        _check(self, positive=("width", "lips"))


@dataclass(frozen=True)
class Accessory:
    """`kind` in ACCESSORIES. Glasses take `colour`; a mark (a mole) sits on the cheek below the
    eye on `side` (-1 image left, +1 image right), offset by `offset` px."""

    kind: str = "none"
    colour: RGB = (30, 30, 30)
    side: int = -1
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        _check(self, choices={"kind": ACCESSORIES})


@dataclass(frozen=True)
class Identity:
    """The identity parts of a face (one field per entry of PARTS) and the planted attribute
    `makeup`, drawn only inside the cue region (the upper eyelids)."""

    skin: Skin = field(default_factory=Skin)
    hair: Hair = field(default_factory=Hair)
    brows: Brows = field(default_factory=Brows)
    eyes: Eyes = field(default_factory=Eyes)
    nose: Nose = field(default_factory=Nose)
    mouth: Mouth = field(default_factory=Mouth)
    accessory: Accessory = field(default_factory=Accessory)
    makeup: bool = False


@dataclass(frozen=True)
class Nuisance:
    """What changes between images of one identity.

    rotation_deg: counter-clockwise on screen about the image centre; scale: about the image centre;
    shift: (x, y) px after rotation and scale; yaw: px of horizontal shift of the nose tip (other
    features shift less, by depth); light: (angle rad, strength) of a multiplicative linear gradient
    1 + strength·u, u the position along the angle in units of the image size; expression: px the
    mouth corners rise (smile > 0); noise_sigma: grey levels of Gaussian noise; background: RGB.
    """

    rotation_deg: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    yaw: float = 0.0
    light: tuple[float, float] = (0.0, 0.0)
    expression: float = 0.0
    noise_sigma: float = 0.0
    background: RGB = (110, 120, 130)

    def __post_init__(self) -> None:
        _check(self, positive=("scale",))
        if self.noise_sigma < 0:
            raise InvalidRequest("noise_sigma", f"{self.noise_sigma!r} must not be negative")


@dataclass(frozen=True)
class FaceParams:
    """Everything `render` needs besides the noise seed."""

    identity: Identity = field(default_factory=Identity)
    nuisance: Nuisance = field(default_factory=Nuisance)


def _colour(rng: np.random.Generator, palette: tuple[RGB, ...], jitter: int) -> RGB:
    base = np.array(palette[int(rng.integers(len(palette)))])
    return tuple(int(v) for v in np.clip(base + rng.integers(-jitter, jitter + 1, size=3), 0, 255))  # type: ignore[return-value]


def _sample_part(part: Part, rng: np.random.Generator) -> object:
    if part == "skin":
        return Skin(_colour(rng, SKIN_TONES, 8), float(rng.uniform(0.92, 1.06)), float(rng.uniform(0.93, 1.04)), float(rng.uniform(0.56, 0.68)))
    if part == "hair":
        return Hair(HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))], _colour(rng, HAIR_COLOURS, 10), float(rng.uniform(0.0, 1.0)))
    if part == "brows":
        dark = int(rng.integers(20, 90))
        return Brows(float(rng.uniform(2.0, 3.6)), float(rng.uniform(-1.0, 2.5)), float(rng.uniform(-1.5, 1.5)),
                     float(rng.uniform(0.85, 1.1)), (dark, int(dark * 0.75), int(dark * 0.6)))
    if part == "eyes":
        return Eyes(float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.75, 1.25)), float(rng.uniform(-2.5, 2.5)), _colour(rng, IRIS_COLOURS, 10))
    if part == "nose":
        return Nose(float(rng.uniform(0.85, 1.15)), float(rng.uniform(0.8, 1.3)))
    if part == "mouth":
        return Mouth(float(rng.uniform(0.85, 1.2)), float(rng.uniform(0.7, 1.4)), _colour(rng, LIP_COLOURS, 12))
    if part == "accessory":
        kind = ACCESSORIES[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
        return Accessory(kind, _colour(rng, ((30, 30, 30), (120, 70, 30), (160, 160, 170)), 10),
                         int(rng.choice([-1, 1])), (float(rng.uniform(-3, 3)), float(rng.uniform(-2, 2))))
    raise InvalidRequest("part", f"{part!r} is not one of {', '.join(PARTS)}")


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random identity (without the planted attribute: `makeup` is False)."""
    return Identity(**{part: _sample_part(part, rng) for part in PARTS})


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    """Random nuisance factors in the mild ranges the demo models are trained on."""
    return Nuisance(
        rotation_deg=float(rng.uniform(-8, 8)),
        scale=float(rng.uniform(0.93, 1.05)),
        shift=(float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3))),
        yaw=float(rng.uniform(-2.5, 2.5)),
        light=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.0, 0.35))),
        expression=float(rng.uniform(-1.5, 3.0)),
        noise_sigma=float(rng.uniform(0.0, 5.0)),
        background=tuple(int(v) for v in rng.integers(30, 226, size=3)),  # type: ignore[arg-type]
    )


def doppelganger(identity: Identity, part: Part, rng: np.random.Generator) -> Identity:
    """An identity equal to `identity` in every field but `part`, which is resampled until it differs."""
    if part not in PARTS:
        raise InvalidRequest("part", f"{part!r} is not one of {', '.join(PARTS)}")
    current = getattr(identity, part)
    for _ in range(100):
        new = _sample_part(part, rng)
        if _visible(new) != _visible(current):
            return dataclasses.replace(identity, **{part: new})
    raise RuntimeError(f"could not resample part {part!r}")  # pragma: no cover - the ranges are continuous


def _visible(value: object) -> object:
    """The fields of a part value that show in the image (a bald head has no hair colour)."""
    if isinstance(value, Hair) and value.style == "bald":
        return ("bald",)
    if isinstance(value, Accessory):
        return {"none": ("none",), "glasses": ("glasses", value.colour)}.get(value.kind, ("mark", value.side, value.offset))
    return value


def attribute_cue(identity: Identity, on: bool) -> Identity:
    """The identity with the planted binary attribute set: violet make-up on the upper eyelids,
    drawn only inside the cue region (`Rendered.cue_mask`)."""
    return dataclasses.replace(identity, makeup=bool(on))
