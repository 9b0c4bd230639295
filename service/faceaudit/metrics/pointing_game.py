"""Pointing game: does the map's maximum fall on the ground-truth region (within a tolerance)?

Math:
    p = argmax_λ S(λ);  hit ⇔ d(p, R) < τ  or  p ∈ R,   d = Euclidean distance in pixels to the
    nearest pixel of the region R (item.region), τ = `tolerance_px`.
    hit rate = hits / images, per method.
Reference:
    J. Zhang et al., Top-down neural attention by excitation backprop, ECCV 2016 (the game);
    TorchRay (facebookresearch/TorchRay, torchray/benchmark/pointing_game.py, `PointingGame.evaluate`,
    read, not run): a hit when some region pixel lies at squared distance < tolerance² from the point,
    tolerance default 15 px. We keep the strict < (a region pixel exactly τ away is a miss) and also
    count a point inside the region as a hit, so that τ = 0 means "inside the region" (TorchRay's
    test would never hit at 0).
Defaults:
    tolerance_px = 15 (TorchRay, for PASCAL/COCO images of a few hundred pixels). On small face
    crops 15 px is a large part of the image: the random baseline below shows how much.
Ties at the maximum (option `ties`):
    "fraction" (default): the image counts the fraction of its maxima that hit, the expected hit of
    a maximum picked uniformly at random, so a constant map scores exactly the random baseline;
    "first": the first maximum in row-major order (numpy/torch argmax, as TorchRay's users do);
    "any": a hit if any maximum hits (lenient: a flat map always hits).
Random baseline (series "random"): the expected hit of a uniformly random pixel, exactly the
fraction of the image within the dilated region (d < τ or inside R), averaged over images.
Output: x = image index (x_label "image"); per series the per-image "hit" (0..1) and summary
hit_rate (and tied_images: images whose maximum is not unique). No forward passes: `progress`
counts images.
Touches: nothing but the items' maps and regions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import Progress
from faceaudit.metrics.common import GameItem, GamePoint, GameResult, PointSink, check_items

GAME = "pointing_game"
RANDOM = "random"
TIES = ("fraction", "first", "any")
MAX_TOLERANCE_PX = 10_000.0


@dataclass(frozen=True)
class PointingGameOptions:
    """`tolerance_px`: accepted distance (px, strict) from the region; `ties`: how tied maxima count."""

    tolerance_px: float = 15.0
    ties: str = "fraction"

    def __post_init__(self) -> None:
        tol = self.tolerance_px
        if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) \
                or not 0 <= tol <= MAX_TOLERANCE_PX:
            raise InvalidRequest("tolerance_px", f"{tol!r} must be a number of pixels in 0..{MAX_TOLERANCE_PX:g}")
        if self.ties not in TIES:
            raise InvalidRequest("ties", f"{self.ties!r} is not one of {', '.join(TIES)}")


def pointing_game(
    model: PreparedModel | None, *, items: Sequence[GameItem], options: PointingGameOptions = PointingGameOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Hit rate of each method's maximum on the items' regions, and the uniform-random hit rate.

    `model` is not run (the maps are given); it is taken for the common game signature.
    """
    if not isinstance(options, PointingGameOptions):
        raise InvalidRequest("options", f"expected PointingGameOptions, got {type(options).__name__}")
    items = check_items(items)
    methods = sorted(items[0].maps)
    series = [*methods, RANDOM]
    hits = {name: [] for name in series}
    tied = dict.fromkeys(methods, 0)
    for i, item in enumerate(items):
        accepted = accepted_region(_region(item, i), options.tolerance_px)
        row = {}
        for name in methods:
            values = np.asarray(item.maps[name])
            maxima = values == values.max()
            tied[name] += int(maxima.sum() > 1)
            row[name] = _hit(maxima, accepted, options.ties)
        row[RANDOM] = float(accepted.mean())
        for name, hit in row.items():
            hits[name].append(hit)
            if on_point is not None:
                on_point(GamePoint(GAME, name, i, float(i), {"hit": hit}))
        if progress is not None:
            progress(i + 1, len(items), GAME)
    summary = {name: {"hit_rate": float(np.mean(hits[name]))} for name in series}
    for name in methods:
        summary[name]["tied_images"] = float(tied[name])
    notes = [
        f"hit: the map's maximum lies inside the region or less than {options.tolerance_px:g} px from it "
        "(TorchRay's strict <); higher hit_rate is better",
        f"ties at the maximum: {options.ties!r} (fraction = share of the tied maxima that hit)",
        f"series '{RANDOM}': exact expected hit rate of a uniformly random pixel (the dilated region's area fraction)",
    ]
    return GameResult(game=GAME, x_label="image", x=[float(i) for i in range(len(items))],
                      curves={name: {"hit": hits[name]} for name in series}, summary=summary,
                      options=dataclasses.asdict(options), forward_passes=0, notes=notes)


def accepted_region(region: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Pixels that count as a hit: inside the region, or at distance < tolerance_px from its nearest pixel."""
    distance = distance_transform_edt(~region)  # 0 inside the region
    return (distance < tolerance_px) | region


def _hit(maxima: np.ndarray, accepted: np.ndarray, ties: str) -> float:
    if ties == "first":
        return float(accepted.flat[int(np.argmax(maxima))])
    inside = accepted[maxima]
    return float(inside.any()) if ties == "any" else float(inside.mean())


def _region(item: GameItem, index: int) -> np.ndarray:
    """The item's region as a non-empty bool mask (0/1 integer masks accepted)."""
    field_name = f"items[{index}].region"
    if item.region is None:
        raise InvalidRequest(field_name, "the pointing game needs a ground-truth region for every image")
    region = np.asarray(item.region)
    if region.dtype != bool:
        if not np.issubdtype(region.dtype, np.number) or not np.isin(region, (0, 1)).all():
            raise InvalidRequest(field_name, "a region is a boolean (or 0/1) mask")
        region = region.astype(bool)
    if not region.any():
        raise InvalidRequest(field_name, "the region is empty: nothing to point at")
    return region
