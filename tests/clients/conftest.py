"""A faceaudit_client.Client connected to an in-process server (tests/server/conftest.py starts it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
