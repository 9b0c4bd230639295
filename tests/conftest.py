"""Shared fixtures: models from the hand-built zoo, loaded from bytes (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
import pytest

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.models import LoadedModel, load_model, resolve_spec


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run suites marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def load(proto: onnx.ModelProto) -> LoadedModel:
    return load_model(proto.SerializeToString())


def prepared(
    proto: onnx.ModelProto, spec: Mapping[str, Any] | None = None, **options: Any
) -> PreparedModel:
    loaded = load(proto)
    return prepare(loaded, resolve_spec(loaded, spec), RuntimeOptions(**options))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def faces(rng: np.random.Generator) -> Callable[[int, int, int], np.ndarray]:
    """Random RGB images (n, h, w, 3) in [0, 255], float32."""

    def make(n: int, h: int, w: int) -> np.ndarray:
        return rng.uniform(0, 255, size=(n, h, w, 3)).astype(np.float32)

    return make
