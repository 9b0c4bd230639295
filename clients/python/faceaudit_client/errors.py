"""Errors of the faceaudit client: one exception class per gRPC status code the service uses.

Every error carries the status `code`, the server's `details` and, for INVALID_ARGUMENT, the
request `field` the message starts with ("images[1].pixels.dtype: ..."). They derive from
faceaudit.errors.FaceAuditError, so the CLI reports a remote error as it reports a local one.
"""

from __future__ import annotations

import re

import grpc

from faceaudit.errors import FaceAuditError

_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")


class ServiceError(FaceAuditError):
    """A call to the faceaudit service failed; `code` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        match = _FIELD.match(details)
        self.field = match.group(1) if match else None


class InvalidArgument(ServiceError):
    """A bad request; `field` names the part of it to fix."""


class NotFound(ServiceError):
    """An unknown model (name or sha256), repository model or dataset folder."""


class AlreadyExists(ServiceError):
    """The model name is registered with other bytes or another spec."""


class FailedPrecondition(ServiceError):
    """The model cannot do what was asked (e.g. a white-box method on a quantised model)."""


class ResourceExhausted(ServiceError):
    """A limit of the server: message or model size, pixels, maps per request, a full queue."""


class Unauthenticated(ServiceError):
    """The server wants `authorization: Bearer <token>` (Client(token=...))."""


class Cancelled(ServiceError):
    """The call was cancelled."""


class DeadlineExceeded(ServiceError):
    """The call's timeout passed; the server stopped the work."""


class Unavailable(ServiceError):
    """The server cannot be reached or is shutting down."""


class Internal(ServiceError):
    """A bug in the server (it logged the traceback and keeps serving)."""


class MissingMapFiles(UserWarning):
    """Client.audit(out=...): the server did not send every map file the audit lists (a server older than
    AuditRequest.return_maps ignores it); `missing` holds their maps/... paths."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


_CLASSES = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: Internal,
}


def service_error(error: grpc.RpcError) -> ServiceError:
    """The client exception for a failed call (grpc raises RpcErrors that are also grpc.Call objects)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    return _CLASSES.get(code, ServiceError)(code, details)
