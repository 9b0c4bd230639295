"""A faceaudit_client.Client connected to an in-process server (tests/server/conftest.py starts it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faceaudit.demo.dataset import write_attribute_dataset
from faceaudit.server.app import FaceAuditServer
from faceaudit_client import Client

from tests.server.conftest import DEMO_MODELS, start_server  # noqa: F401  (DEMO_MODELS re-exported)


@pytest.fixture(scope="module")
def server() -> Iterator[FaceAuditServer]:
    running = start_server()
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def client(server: FaceAuditServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=60) as connected:
        yield connected


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset repository holding one small demo attribute dataset, "faces"."""
    root = tmp_path_factory.mktemp("datasets")
    write_attribute_dataset(root / "faces", identities=2)
    return root


@pytest.fixture(scope="module")
def auditing(datasets: Path) -> Iterator[str]:
    """HOST:PORT of a server whose dataset repository is `datasets`."""
    running = start_server(dataset_repository=datasets)
    yield f"127.0.0.1:{running.port}"
    running.stop(0)
