"""grpc.health.v1 of a faceaudit server: is it (or one of its services) serving?

Health checks need no token (the server keeps them open), so this needs no Client: container health
checks and scripts that wait for a server call it with a target alone (`faceaudit health`).
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faceaudit_client.errors import service_error


def health_status(target: str, *, service: str = "", tls_root: bytes | None = None, timeout: float = 3.0) -> str:
    """The status name of `service` ("" is the whole server): "SERVING", or "NOT_SERVING" while the
    server drains. Raises NotFound for a service it does not know, Unavailable or DeadlineExceeded
    when it cannot be reached within `timeout` seconds."""
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_root) if tls_root is not None else None
    with grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                  timeout=timeout)
        except grpc.RpcError as exc:
            raise service_error(exc) from exc
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
