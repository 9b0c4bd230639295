"""`faceaudit health`: ask a faceaudit server's grpc.health.v1 service whether it is serving.

For container health checks (the image's HEALTHCHECK, deploy/Dockerfile) and for scripts that wait
for a server to come up; Kubernetes probes the port natively (deploy/kubernetes/faceaudit.yaml).
Health checks need no token (server/auth.py keeps them open). Exit status: 0 SERVING, 1 the server
answers but is not serving (NOT_SERVING while it drains, or an unknown --service), 2 it cannot be
reached (or a flag is wrong). Reads only the --tls-root file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from faceaudit.errors import InvalidRequest
from faceaudit_client import NotFound, ServiceError
from faceaudit_client.health import health_status

UNREACHABLE = 2


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="HOST:PORT",
                        help="the server to ask (default localhost:$FACEAUDIT_PORT, or localhost:50051)")
    parser.add_argument("--service", default="",
                        help="one service's status, e.g. faceaudit.v1.Explain (default: the whole server)")
    parser.add_argument("--tls-root", help="PEM root certificates of a TLS server (default: plaintext)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds one check may take (default 3)")
    parser.add_argument("--wait", type=float, default=0.0,
                        help="keep asking (once a second) until SERVING or this many seconds have passed")


def cmd_health(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise InvalidRequest("timeout", f"{args.timeout} must be positive")
    if args.wait < 0:
        raise InvalidRequest("wait", f"{args.wait} must not be negative")
    target = args.server or f"localhost:{os.environ.get('FACEAUDIT_PORT') or 50051}"
    if ":" not in target or not target.rsplit(":", 1)[1].isdigit():
        raise InvalidRequest("server", f"{target!r} is not HOST:PORT")
    tls_root = _read(args.tls_root)
    deadline = time.monotonic() + args.wait
    while True:
        status, answer = _check(target, args.service, tls_root, args.timeout)
        if status == 0 or time.monotonic() + 1.0 > deadline:
            break
        time.sleep(1.0)
    asked = f"{target} {args.service}".rstrip()
    print(f"{asked}: {answer}", file=sys.stdout if status == 0 else sys.stderr)
    return status


def _check(target: str, service: str, tls_root: bytes | None, timeout: float) -> tuple[int, str]:
    """(exit status, what the server said) for one check."""
    try:
        answer = health_status(target, service=service, tls_root=tls_root, timeout=timeout)
    except NotFound as exc:  # the server is up; it does not know the service
        return 1, f"unknown service ({exc.details})"
    except ServiceError as exc:
        return UNREACHABLE, f"unreachable: {exc}"
    return (0 if answer == "SERVING" else 1), answer


def _read(tls_root: str | None) -> bytes | None:
    if not tls_root:
        return None
    try:
        return Path(tls_root).read_bytes()
    except OSError as exc:
        raise InvalidRequest("tls_root", f"cannot read {tls_root}: {exc.strerror or exc}") from exc
