"""check_map and check_items: maps of any real dtype are read as their values, others refused by field."""

from __future__ import annotations

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.common import GameItem, check_items, check_map


def test_bool_and_integer_maps_become_float64_of_their_values_and_float_maps_are_kept() -> None:
    flags = check_map([[True, False]], (1, 2), "m")
    assert flags.dtype == np.float64 and flags.tolist() == [[1.0, 0.0]]
    small = check_map(np.array([[-128, 127]], np.int8), (1, 2), "m")
    assert small.dtype == np.float64 and np.ptp(small) == 255.0  # np.ptp in int8 gives −1
    wide = check_map(np.array([[-60000.0, 60000.0]], np.float16), (1, 2), "m")  # float16 ptp overflows
    assert wide.dtype == np.float64 and np.ptp(wide) == pytest.approx(120000.0, rel=1e-3)
    single = np.zeros((1, 2), np.float32)
    assert check_map(single, (1, 2), "m") is single  # no copy of what the methods return


@pytest.mark.parametrize("values", [np.array([[1 + 2j, 0]]), np.array([["a", "b"]]), np.array([[None, 1]], object)])
def test_maps_that_are_not_real_numbers_are_refused(values: np.ndarray) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_map(values, (1, 2), "items[0].maps[m]")
    assert caught.value.field == "items[0].maps[m]"


def test_check_items_hands_games_the_converted_maps() -> None:
    image = np.zeros((1, 2, 3), np.float32)
    item = GameItem(image, ExplainTarget(class_index=0), {"m": np.array([[True, False]]), "f": np.ones((1, 2))})
    [checked] = check_items([item])
    assert checked.maps["m"].dtype == np.float64 and checked.maps["f"] is item.maps["f"]
    kept = GameItem(image, ExplainTarget(class_index=0), {"f": np.ones((1, 2))})
    assert check_items([kept])[0] is kept
    with pytest.raises(InvalidRequest) as caught:
        check_items([kept, GameItem(image, ExplainTarget(class_index=0), {"f": np.array([[np.nan, 0.0]])})])
    assert caught.value.field == "items[1].maps[f]"
