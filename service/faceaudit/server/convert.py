"""Messages <-> numpy and Python values, and faceaudit errors -> gRPC status codes.

Every conversion validates what it reads and names the request field in its error, so the client
learns which part of its message to fix. Nothing here runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2

from faceaudit.engine.batcher import BatcherClosed, RequestCancelled
from faceaudit.errors import (
    FaceAuditError, InvalidModel, InvalidRequest, LimitExceeded, ModelOutputError, RuntimeUnavailable,
    UnsupportedModel,
)
from faceaudit.images.io import DEFAULT_MAX_PIXELS, check_image_array, fit_to_model, read_image_for_model
from faceaudit.methods.common import ExplainTarget
from faceaudit.models.spec import ModelSpec
from faceaudit.v1 import faceaudit_pb2 as pb

_DTYPES = {pb.Tensor.FLOAT32: np.dtype("<f4"), pb.Tensor.FLOAT16: np.dtype("<f2")}
MAX_TENSOR_RANK = 4


class NotFound(FaceAuditError):
    """An unknown model name or hash (NOT_FOUND)."""


class AlreadyExists(FaceAuditError):
    """A model name already taken by other bytes or another spec (ALREADY_EXISTS)."""


class TimeLimit(FaceAuditError):
    """A server time limit passed: an upload waited too long for a chunk or took too long (DEADLINE_EXCEEDED)."""


class CallEnded(Exception):
    """Raised from a progress callback when the client cancelled, or its deadline or the server's limit passed."""


ECHO_CHARS = 128  # client values echoed in messages beyond this are cut (a status message must stay small)


def shorten(text: str) -> str:
    """How a message quotes a client's text: its repr; past ECHO_CHARS, the repr of its start and its length."""
    return repr(text) if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS // 2]!r}… ({len(text):,} characters)"


def tensor_to_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """The tensor as a float32 array; InvalidRequest naming `field` for a bad dtype, shape or size."""
    if tensor.dtype not in _DTYPES:
        raise InvalidRequest(f"{field}.dtype", "must be FLOAT32 or FLOAT16")
    shape = tuple(tensor.shape)
    if not 1 <= len(shape) <= MAX_TENSOR_RANK or any(d < 1 for d in shape):
        raise InvalidRequest(f"{field}.shape", f"{list(shape)} must have 1 to {MAX_TENSOR_RANK} positive dimensions")
    dtype = _DTYPES[tensor.dtype]
    count = math.prod(shape)
    if len(tensor.data) != count * dtype.itemsize:
        raise InvalidRequest(f"{field}.data", f"holds {len(tensor.data)} bytes; shape {list(shape)} of {dtype.name} "
                                              f"needs {count * dtype.itemsize}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(np.float32)


def array_to_tensor(array: np.ndarray) -> pb.Tensor:
    values = np.ascontiguousarray(array, dtype="<f4")
    return pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=values.shape, data=values.tobytes())


def image_to_array(image: pb.Image, spec: ModelSpec, field: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The model-sized float32 RGB image of an encoded or raw image message that takes no landmarks (only the
    images the canonical method explains do: explain_service.image_context)."""
    if image.landmarks:
        raise InvalidRequest(f"{field}.landmarks", "only the images explained by the canonical method (cis) take "
                                                   "landmarks")
    return model_image(image, spec, field, max_pixels)[0]


def model_image(image: pb.Image, spec: ModelSpec, field: str, max_pixels: int = DEFAULT_MAX_PIXELS
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """The model-sized float32 RGB image of an encoded or raw image message, and the image's own (height, width)
    (large encoded images are shrunk in 8 bits first: images.io.read_image_for_model)."""
    which = image.WhichOneof("source")
    if which == "encoded":
        return read_image_for_model(image.encoded, spec, max_pixels=max_pixels, field=field)
    if which == "pixels":
        pixels = tensor_to_array(image.pixels, f"{field}.pixels")
        if pixels.ndim not in (2, 3):
            raise InvalidRequest(f"{field}.pixels.shape", f"{list(pixels.shape)} is not (H, W, 3) or (H, W)")
        if pixels.shape[0] * pixels.shape[1] > max_pixels:
            raise LimitExceeded(f"{field}.pixels: {pixels.shape[1]}x{pixels.shape[0]} pixels is above the limit of "
                                f"{max_pixels:,}")
        return fit_to_model(check_image_array(pixels, field=f"{field}.pixels"), spec), pixels.shape[:2]
    raise InvalidRequest(field, "no image: set encoded or pixels")


def target_of(target: pb.Target | None, spec: ModelSpec, field: str) -> ExplainTarget | None:
    """The ExplainTarget of a target message; None means "the predicted class" (classifiers)."""
    which = target.WhichOneof("kind") if target is not None else None
    if which is None or which == "predicted_class" and target.predicted_class:
        return None
    if which == "class_index":
        return ExplainTarget(class_index=int(target.class_index))
    if which == "predicted_class":
        raise InvalidRequest(f"{field}.predicted_class", "false is not a target: set class_index or pair instead")
    pair = target.pair
    if not pair.HasField("mate"):
        raise InvalidRequest(f"{field}.pair.mate", "an embedding target needs a mate image")
    mate = image_to_array(pair.mate, spec, f"{field}.pair.mate")
    non_mate = image_to_array(pair.non_mate, spec, f"{field}.pair.non_mate") if pair.HasField("non_mate") else None
    return ExplainTarget(mate=mate, non_mate=non_mate)


def struct_to_dict(value: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A Struct as a dict; whole numbers become ints (JSON has only doubles, options want ints).

    NaN and ±Inf are refused naming their path (`options.methods.occlusion.patch`, `spec.mean[0]`):
    json_format cannot write them, and no option or spec field means anything by them.
    """
    return {key: _plain(item, f"{field}.{key}") for key, item in value.fields.items()}


def _plain(value: struct_pb2.Value, path: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise InvalidRequest(path, f"{number} is not a valid value (NaN/Inf)")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "struct_value":
        return struct_to_dict(value.struct_value, path)
    if kind == "list_value":
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value.list_value.values)]
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no kind set


def dict_to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON-ready dict (see SaliencyMap.metadata, GameResult.to_dict) as a Struct; NaN/inf become text."""
    struct = struct_pb2.Struct()
    struct.update(_finite(dict(values)))
    return struct


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.generic,)):
        return _finite(value.item())
    return value


# One place that says which status each domain error gets (see proto/faceaudit/v1/faceaudit.proto).
STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),  # InvalidImage, SpecAmbiguous included
    (InvalidModel, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (UnsupportedModel, grpc.StatusCode.FAILED_PRECONDITION),
    (RuntimeUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelOutputError, grpc.StatusCode.FAILED_PRECONDITION),  # the model yields NaN/inf: it cannot be explained
    (RequestCancelled, grpc.StatusCode.CANCELLED),
    (BatcherClosed, grpc.StatusCode.UNAVAILABLE),  # the server is shutting down (calls.py: or the model unregistered)
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TimeLimit, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_of(error: BaseException) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL
