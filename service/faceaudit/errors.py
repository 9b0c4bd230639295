"""Domain errors of faceaudit.

Every error a user can cause is one of these classes; the server maps each class to one gRPC status
code in one place and the CLI prints the message. Nothing here imports grpc. Messages name the
field (and, where a flag sets it, the flag) so that the user knows what to change.
"""

from __future__ import annotations


class FaceAuditError(Exception):
    """Base class of every error faceaudit raises on purpose."""


class InvalidRequest(FaceAuditError):
    """A value given by the user is malformed or out of range (gRPC INVALID_ARGUMENT)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class SpecAmbiguous(InvalidRequest):
    """A model-spec field that the graph does not reveal is needed by the requested operation."""

    def __init__(self, field: str, flag: str, why: str) -> None:
        super().__init__(field, f"{why}; set it with {flag} (or '{field}' in the spec file)")
        self.flag = flag


class InvalidModel(FaceAuditError):
    """The model bytes are not a valid ONNX model, or fail the checker (gRPC INVALID_ARGUMENT)."""


class UnsupportedModel(FaceAuditError):
    """The model is valid ONNX but cannot be used as asked (gRPC FAILED_PRECONDITION)."""


class LimitExceeded(FaceAuditError):
    """A size limit was exceeded: model bytes, image pixels, request size (RESOURCE_EXHAUSTED)."""


class InvalidImage(InvalidRequest):
    """An image cannot be decoded or has an unusable size."""


class ModelOutputError(FaceAuditError):
    """The model produced NaN or infinite values, or outputs of an unexpected shape."""


class RuntimeUnavailable(FaceAuditError):
    """The requested execution provider is not available on this host (FAILED_PRECONDITION)."""
