"""What every evaluation game shares: the items it is played on, the points it streams, its result.

Every game is one function in its own file, named after the file, with one keyword-only signature:

    def hiding_game(model: PreparedModel, *, items: Sequence[GameItem],
                    options: HidingGameOptions = HidingGameOptions(),
                    on_point: PointSink | None = None, progress: Progress | None = None) -> GameResult

A game is played over a set of images at once (the papers' curves are dataset curves), for every
method whose maps the items carry, plus the baselines the game defines (a uniform-random map is
always one series). Points are handed to `on_point` as soon as they are known, so a caller (the
gRPC stream, the CLI) can show a curve while it grows; the returned GameResult holds them all.
Options are frozen dataclasses validated in `__post_init__` (InvalidRequest naming the option);
stochastic games take `seed`. `progress(done, total, phase)` counts forward passes, as for methods,
and may raise to cancel the game (the server does that for a cancelled call).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.saliency_map import _jsonable

__all__ = ["GameItem", "GamePoint", "GameResult", "PointSink", "Progress", "check_items", "check_map"]


@dataclass(frozen=True)
class GameItem:
    """One image a game is played on, with the maps of every compared method over it.

    `image` is model-sized float32 RGB (H, W, 3) in [0, 255]. `target` is what the maps explain and
    what success means: for classifiers the true class (class_index), for embedding models the mate
    and non-mate images. `maps` maps a method name to its (H, W) map over `image` (larger = more
    important). `region` is an optional (H, W) bool ground-truth region (pointing game, inpainting).
    """

    image: np.ndarray = field(repr=False)
    target: ExplainTarget
    maps: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    region: np.ndarray | None = field(default=None, repr=False)
    name: str = ""  # for messages and per-image reports: the file name, say


@dataclass(frozen=True)
class GamePoint:
    """One point of one series of a game's curve, streamed as soon as it is computed."""

    game: str
    series: str  # a method name, or a baseline such as "random"
    index: int  # position along the x axis
    x: float
    values: dict[str, float]  # the quantities at x, e.g. {"accuracy": 0.93, "mean_score": 0.81}

    def to_dict(self) -> dict[str, Any]:
        return {"game": self.game, "series": self.series, "index": self.index, "x": self.x,
                "values": _jsonable(self.values)}


PointSink = Callable[[GamePoint], None]


@dataclass
class GameResult:
    """Everything a game measured, JSON-ready through to_dict().

    `curves[series][quantity]` runs along `x`; `summary[series][name]` holds the numbers a report
    or a CI gate compares (areas under curves, rates at operating points, verdicts as 0/1).
    Games without a curve leave `x` and `curves` empty.
    """

    game: str
    x_label: str
    x: list[float]
    curves: dict[str, dict[str, list[float]]]
    summary: dict[str, dict[str, float]]
    options: dict[str, Any]
    forward_passes: int
    notes: list[str] = field(default_factory=list)  # conventions and caveats, in words

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "game": self.game, "x_label": self.x_label, "x": self.x, "curves": self.curves,
            "summary": self.summary, "options": self.options, "forward_passes": self.forward_passes,
            "notes": self.notes,
        })


def check_map(values: Any, shape: tuple[int, ...], field_name: str) -> np.ndarray:
    """One map validated (real numbers, `shape`, finite): every game checks its maps here.

    Booleans count as 0/1 and integers as their values: maps of any dtype but float32 and float64
    are converted to float64, so that no game computes in the caller's dtype (a bool map's range
    raises, an int8 map's wraps: 127 − (−128) = −1, a float16 map's overflows past 65504). float32
    maps, what the methods return, are kept without a copy; the games compute their differences
    and sums in float64.
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise InvalidRequest(field_name, f"a map holds real numbers (or booleans), got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.shape != shape:
        raise InvalidRequest(field_name, f"map shape {array.shape} is not the image's {shape}")
    if not np.isfinite(array).all():
        raise InvalidRequest(field_name, "map has NaN or infinite values")
    return array


def check_items(items: Any, *, need_maps: bool = True) -> list[GameItem]:
    """The items as a list, validated: at least one, same image shape, maps of that shape, finite.

    Every item must carry maps of the same methods, so that every series is over the same images.
    The items returned carry their maps as check_map returns them (float32 or float64 arrays).
    """
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidRequest("items", "a game needs at least one image with its maps")
    shape = None
    methods = None
    checked: list[GameItem] = []
    for i, item in enumerate(items):
        if not isinstance(item, GameItem):
            raise InvalidRequest(f"items[{i}]", f"expected a GameItem, got {type(item).__name__}")
        image = np.asarray(item.image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidRequest(f"items[{i}].image", f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        if shape is None:
            shape = image.shape[:2]
        elif image.shape[:2] != shape:
            raise InvalidRequest(f"items[{i}].image", f"all images must be {shape}, got {image.shape[:2]}")
        names = sorted(item.maps)
        if methods is None:
            methods = names
        elif names != methods:
            raise InvalidRequest(f"items[{i}].maps", f"every image needs maps of the same methods {methods}, got {names}")
        maps = {name: check_map(values, shape, f"items[{i}].maps[{name}]") for name, values in item.maps.items()}
        if any(maps[name] is not item.maps[name] for name in maps):
            item = replace(item, maps=maps)
        if item.region is not None and np.asarray(item.region).shape != shape:
            raise InvalidRequest(f"items[{i}].region", f"region shape {np.asarray(item.region).shape} is not the image's {shape}")
        checked.append(item)
    if need_maps and not methods:
        raise InvalidRequest("items", "the items carry no maps to evaluate")
    return checked
