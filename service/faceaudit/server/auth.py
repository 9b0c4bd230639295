"""Optional bearer-token authentication: every RPC but health checks needs `authorization: Bearer <token>`.

Health checks stay open so that load balancers and orchestrators can probe a server they hold no
token for. The token comes from a file (--token-file) or the environment (FACEAUDIT_TOKEN); it is
compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from faceaudit.errors import InvalidRequest

OPEN_SERVICES = ("/grpc.health.v1.Health/",)
MIN_TOKEN_CHARS = 16


def read_token(token_file: str | None, env: dict[str, str] | None = None) -> str | None:
    """The token from `token_file`, else FACEAUDIT_TOKEN, else None (no authentication)."""
    env = dict(os.environ) if env is None else env
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidRequest("token_file", f"cannot read {token_file}: {exc.strerror or exc}") from exc
        field = "token_file"
    elif env.get("FACEAUDIT_TOKEN"):
        token, field = env["FACEAUDIT_TOKEN"].strip(), "FACEAUDIT_TOKEN"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise InvalidRequest(field, f"a token needs at least {MIN_TOKEN_CHARS} characters and no whitespace")
    return token


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without the token with UNAUTHENTICATED, before any handler runs."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return handler
        return _refusal(handler, "missing or wrong bearer token (metadata 'authorization: Bearer <token>')")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` that ends the call with UNAUTHENTICATED."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **serializers)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **serializers)
    return grpc.unary_unary_rpc_method_handler(refuse, **serializers)
