"""Pointing game on hand-made maps and regions: distances worked out by hand, TorchRay's test brute-forced."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.pointing_game import PointingGameOptions, accepted_region, pointing_game

SIZE = 32
BOX = np.zeros((SIZE, SIZE), bool)
BOX[10:15, 10:15] = True  # rows and columns 10..14


def peak(*points: tuple[int, int]) -> np.ndarray:
    values = np.zeros((SIZE, SIZE), np.float32)
    for y, x in points:
        values[y, x] = 1.0
    return values


def item(region: np.ndarray = BOX, **maps: np.ndarray) -> GameItem:
    return GameItem(image=np.zeros((SIZE, SIZE, 3), np.float32), target=ExplainTarget(class_index=0),
                    maps=maps, region=region)


def hit_rate(tolerance: float, *maps: np.ndarray, ties: str = "fraction") -> list[float]:
    result = pointing_game(None, items=[item(m=m) for m in maps], options=PointingGameOptions(tolerance, ties))
    return result.curves["m"]["hit"]


@pytest.mark.parametrize(("point", "distance"), [((10, 25), 11.0), ((20, 20), np.hypot(6, 6)), ((3, 12), 7.0)])
def test_tolerance_boundary_is_strict(point: tuple[int, int], distance: float) -> None:
    assert hit_rate(distance, peak(point)) == [0.0]  # exactly τ away: a miss, as TorchRay's `<`
    assert hit_rate(distance + 1e-6, peak(point)) == [1.0]
    assert hit_rate(distance - 0.5, peak(point)) == [0.0]


def test_inside_hits_even_at_zero_tolerance() -> None:
    assert hit_rate(0, peak((12, 12)), peak((14, 14)), peak((15, 14))) == [1.0, 1.0, 0.0]


def test_default_tolerance_is_torchrays_15px() -> None:
    assert PointingGameOptions().tolerance_px == 15
    assert hit_rate(15, peak((10, 29))) == [0.0] and hit_rate(15, peak((10, 28))) == [1.0]


def test_accepted_region_matches_torchrays_disk_test() -> None:
    """TorchRay: hit ⇔ some region pixel at squared distance < τ² (plus: inside the region always hits)."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    for tolerance in (0.5, 3, 7.5, 15):
        region = rng.random((SIZE, SIZE)) < 0.01
        region[5, 5] = True
        accepted = accepted_region(region, tolerance)
        for y, x in rng.integers(0, SIZE, (40, 2)):
            disk = (ys - y) ** 2 + (xs - x) ** 2 < tolerance**2
            assert accepted[y, x] == bool((region & disk).any() or region[y, x])


def test_ties() -> None:
    far_then_inside = peak((0, 31), (12, 12))  # row-major: the far maximum comes first
    assert hit_rate(2, far_then_inside, ties="fraction") == [0.5]
    assert hit_rate(2, far_then_inside, ties="any") == [1.0]
    assert hit_rate(2, far_then_inside, ties="first") == [0.0]
    assert hit_rate(2, peak((12, 12), (31, 0)), ties="first") == [1.0]


def test_random_baseline_is_the_accepted_area_and_a_flat_map_scores_it() -> None:
    flat = np.ones((SIZE, SIZE), np.float32)
    points: list[GamePoint] = []
    result = pointing_game(None, items=[item(m=flat), item(m=peak((12, 12)))],
                           options=PointingGameOptions(tolerance_px=0), on_point=points.append)
    assert result.summary["random"]["hit_rate"] == pytest.approx(25 / SIZE**2)
    assert result.curves["m"]["hit"] == [pytest.approx(25 / SIZE**2), 1.0]
    assert result.summary["m"] == {"hit_rate": pytest.approx((25 / SIZE**2 + 1) / 2), "tied_images": 1.0}
    # the disk of radius < 1.5 around the box adds the 4 edge strips of 5 and the 4 diagonal corners
    wider = pointing_game(None, items=[item(m=flat)], options=PointingGameOptions(tolerance_px=1.5))
    assert wider.summary["random"]["hit_rate"] == pytest.approx((25 + 4 * 5 + 4) / SIZE**2)
    assert result.forward_passes == 0 and len(points) == 4
    json.dumps(result.to_dict(), allow_nan=False)


def test_several_methods_and_integer_regions() -> None:
    region = BOX.astype(np.uint8)
    result = pointing_game(None, items=[item(region, good=peak((11, 11)), bad=peak((31, 31)))])
    assert result.summary["good"]["hit_rate"] == 1.0 and result.summary["bad"]["hit_rate"] == 0.0


@pytest.mark.parametrize(("region", "message"), [
    (None, "needs a ground-truth region"), (np.zeros((SIZE, SIZE), bool), "empty"),
    (np.full((SIZE, SIZE), 0.5), "boolean"),
])
def test_bad_regions_name_the_item(region: np.ndarray | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as err:
        pointing_game(None, items=[item(m=peak((1, 1))), item(region, m=peak((1, 1)))])
    assert err.value.field == "items[1].region"


@pytest.mark.parametrize(("name", "value"), [("tolerance_px", -1), ("tolerance_px", "15"), ("tolerance_px", True),
                                             ("tolerance_px", float("nan")), ("ties", "max")])
def test_options_validated(name: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as err:
        PointingGameOptions(**{name: value})
    assert err.value.field == name
