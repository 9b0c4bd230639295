"""The games registry: names, lookup errors, and evaluate() as the one entry point."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget
from faceaudit.metrics.common import GameItem
from faceaudit.metrics.pointing_game import PointingGameOptions, pointing_game
from faceaudit.metrics.registry import GAMES, evaluate, games_for, get_game
from faceaudit.testing.zoo import planted_region_classifier
from tests.conftest import prepared


@pytest.fixture(scope="module")
def model():
    return prepared(planted_region_classifier(), {"kind": "classifier", "output_type": "probabilities"})


def _items(hit: bool) -> list[GameItem]:
    region = np.zeros((32, 32), bool)
    region[8:16, 20:28] = True
    peak = np.zeros((32, 32))
    peak[(10, 24) if hit else (28, 2)] = 1.0  # inside the region, or 20+ px away from it
    return [GameItem(image=np.full((32, 32, 3), 100, np.float32), target=ExplainTarget(class_index=0),
                     maps={"m": peak}, region=region)]


def test_every_game_is_named_after_its_file() -> None:
    for name, game in GAMES.items():
        module = importlib.import_module(f"faceaudit.metrics.{name}")
        assert getattr(module, name) is game.run
        assert dataclasses.is_dataclass(game.options)
        assert game.kinds <= {"classifier", "embedding"} and game.inputs


def test_unknown_game_names_the_game_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        get_game("no_such_game")
    assert caught.value.field == "game" and "hiding_game" in str(caught.value)
    with pytest.raises(InvalidRequest, match="game"):
        get_game(3)  # type: ignore[arg-type]
    assert get_game("Hiding-Game").name == "hiding_game"


def test_evaluate_equals_the_direct_call_with_loose_options(model) -> None:
    direct = pointing_game(model, items=_items(True), options=PointingGameOptions(tolerance_px=0.0))
    loose = evaluate(model, "pointing-game", items=_items(True), options={"tolerance_px": "0"})
    assert loose.to_dict() == direct.to_dict()
    assert loose.summary["m"]["hit_rate"] == 1.0
    assert evaluate(model, "pointing_game", items=_items(False)).summary["m"]["hit_rate"] == 0.0


def test_evaluate_checks_inputs_options_and_kind(model) -> None:
    with pytest.raises(InvalidRequest) as caught:
        evaluate(model, "pointing_game", items=_items(True), images=[])
    assert caught.value.field == "images"
    with pytest.raises(InvalidRequest) as caught:
        evaluate(model, "pointing_game")
    assert caught.value.field == "items"
    with pytest.raises(InvalidRequest) as caught:
        evaluate(model, "pointing_game", items=_items(True), options={"no_such_option": 1})
    assert caught.value.field == "no_such_option"
    with pytest.raises(InvalidRequest) as caught:
        evaluate(model, "inpainting_game", items=[])
    assert caught.value.field == "game" and "embedding" in str(caught.value)


def test_games_for_kind() -> None:
    assert "inpainting_game" in games_for("embedding") and "inpainting_game" not in games_for("classifier")
    assert "hiding_game" in games_for("classifier")
