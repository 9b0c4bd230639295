"""audit.demo's request options: the profile's, then the CLI's overrides, only for what the model runs."""

from __future__ import annotations

from faceaudit.audit.demo import FAST, FULL, MODELS, demo_options
from faceaudit.methods.registry import METHODS

ATTRIBUTE, IDENTITY, EMBEDDING = MODELS


def test_options_keep_only_the_methods_and_games_of_the_model() -> None:
    attribute = demo_options(FULL, ATTRIBUTE, None)
    embedding = demo_options(FULL, EMBEDDING, None)
    assert "corr_rise" not in attribute["methods"] and embedding["methods"]["corr_rise"] == {"masks": 1000}
    assert "inpainting_game" not in attribute["games"] and embedding["games"]["inpainting_game"]["tau"] == 0.7
    assert all(ATTRIBUTE.kind in METHODS[m].kinds for m in attribute["methods"])


def test_overrides_win_and_named_methods_limit_the_options() -> None:
    options = demo_options(FAST, EMBEDDING, ["rise", "gradient"],
                           {"cms": {"stride": 8}, "methods": {"rise": {"seed": 3}, "gradient": {"reduce": "sum"}},
                            "games": {"deletion": {"steps": 9}}})
    assert options["cms"] == {"patch": 16, "stride": 8}
    assert options["methods"] == {"rise": {"masks": 32, "seed": 3}, "gradient": {"reduce": "sum"}}
    assert options["games"]["deletion"] == {"steps": 9}
