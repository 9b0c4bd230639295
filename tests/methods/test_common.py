from __future__ import annotations

from dataclasses import dataclass

import pytest

from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import options_from


@dataclass(frozen=True)
class _Options:
    patch: int = 15
    keep: float = 0.5
    fill: str = "zero"
    antithetic: bool = False
    constant: tuple[float, ...] | None = None


def test_loose_values_are_converted_to_the_annotated_types():
    options = options_from(_Options, {"patch": "9", "keep": "0.25", "fill": "blur", "antithetic": "true", "constant": "1,2,3"})
    assert options == _Options(9, 0.25, "blur", True, (1.0, 2.0, 3.0))
    assert options_from(_Options, {"patch": 7.0, "constant": [5]}) == _Options(patch=7, constant=(5.0,))
    assert options_from(_Options, None) == _Options()


@pytest.mark.parametrize(("values", "field"), [
    ({"patch": "7.5"}, "patch"), ({"patch": True}, "patch"), ({"keep": "half"}, "keep"),
    ({"antithetic": "maybe"}, "antithetic"), ({"constant": "1,x"}, "constant"), ({"size": 3}, "size"),
    ({"keep": "nan"}, "keep"), ({"keep": float("inf")}, "keep"), ({"keep": "-inf"}, "keep"),
    ({"constant": "1,nan,3"}, "constant"), ({"constant": [1.0, float("inf")]}, "constant"),
])
def test_bad_values_name_the_option(values, field):
    with pytest.raises(InvalidRequest) as info:
        options_from(_Options, values)
    assert info.value.field == field


def test_text_tuples_are_split_on_commas():
    from dataclasses import dataclass

    from faceaudit.methods.common import options_from

    @dataclass(frozen=True)
    class Layers:
        layers: tuple[str, ...] = ()

    assert options_from(Layers, {"layers": "conv1, conv2"}).layers == ("conv1", "conv2")
    assert options_from(Layers, {"layers": ["a", "b"]}).layers == ("a", "b")
