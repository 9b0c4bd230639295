"""`faceaudit health` against real in-process servers: serving, draining, unknown service, unreachable."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from faceaudit.cli.main import main

from tests.server.conftest import start_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serving_server_and_its_services(capsys):
    server = start_server(token="0123456789abcdef-token")  # health checks need no token
    try:
        assert main(["health", "--server", f"127.0.0.1:{server.port}"]) == 0
        assert "SERVING" in capsys.readouterr().out
        assert main(["health", "--server", f"127.0.0.1:{server.port}", "--service", "faceaudit.v1.Explain"]) == 0
        assert main(["health", "--server", f"127.0.0.1:{server.port}", "--service", "faceaudit.v1.Nope"]) == 1
        assert "unknown service" in capsys.readouterr().err
    finally:
        server.stop(0)


def test_default_target_reads_the_port_from_the_environment(monkeypatch):
    server = start_server()
    try:
        monkeypatch.setenv("FACEAUDIT_PORT", str(server.port))
        assert main(["health"]) == 0
    finally:
        server.stop(0)


def test_draining_server_is_not_serving(capsys):
    server = start_server(drain_notice_s=3.0)
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    try:
        time.sleep(0.3)  # inside the drain notice: calls are still taken, health says NOT_SERVING
        assert main(["health", "--server", f"127.0.0.1:{server.port}"]) == 1
        assert "NOT_SERVING" in capsys.readouterr().err
    finally:
        stopping.join()


def test_unreachable_server_and_waiting(capsys):
    target = f"127.0.0.1:{free_port()}"
    assert main(["health", "--server", target, "--timeout", "0.5"]) == 2
    assert "unreachable" in capsys.readouterr().err
    started = time.monotonic()
    assert main(["health", "--server", target, "--timeout", "0.3", "--wait", "2"]) == 2
    assert time.monotonic() - started >= 1.0  # it asked again before giving up


def test_waiting_sees_a_server_that_comes_up():
    port = free_port()
    servers = []
    later = threading.Timer(1.0, lambda: servers.append(start_server(port=port)))
    later.start()
    try:
        assert main(["health", "--server", f"127.0.0.1:{port}", "--timeout", "0.5", "--wait", "10"]) == 0
    finally:
        later.join()
        for server in servers:
            server.stop(0)


@pytest.mark.parametrize("argv, field", [(["--server", "localhost"], "server"), (["--timeout", "0"], "timeout"),
                                         (["--wait", "-1"], "wait"), (["--tls-root", "/nonexistent.pem"], "tls_root")])
def test_bad_flags_are_named(argv, field, capsys):
    assert main(["health", *argv]) == 2
    assert f"error: {field}:" in capsys.readouterr().err
