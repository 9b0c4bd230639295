"""numpy arrays, images, targets and JSON values <-> faceaudit.v1 messages, on the client side.

The server's converter (faceaudit.server.convert) imports the engine and the model code; a client
needs none of it, so this module depends on numpy, protobuf and the generated messages only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from google.protobuf import json_format, struct_pb2

from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.v1 import faceaudit_pb2 as pb

# An image: pixels as an array ((H, W, 3) or (H, W), values in [0, 255]), a file path, or the
# encoded bytes of a PNG/JPEG/... file.
ImageSource = Union[np.ndarray, str, os.PathLike, bytes]
Landmarks = Union[np.ndarray, Sequence[Sequence[float]]]  # (K, 2) x, y in the image's pixels

_DTYPES = {pb.Tensor.FLOAT32: np.dtype("<f4"), pb.Tensor.FLOAT16: np.dtype("<f2")}


@dataclass(frozen=True)
class Pair:
    """The target of an embedding model: the probe's match to `mate`, minus `non_mate` if given."""

    mate: ImageSource
    non_mate: ImageSource | None = None


# A target: a class index, a Pair, or None (a classifier's predicted class).
TargetSource = Union[int, Pair, None]


def array_to_tensor(array: np.ndarray) -> pb.Tensor:
    """float16 arrays travel as FLOAT16 (half the bytes), everything else as FLOAT32."""
    array = np.asarray(array)
    half = array.dtype == np.float16
    values = np.ascontiguousarray(array, dtype="<f2" if half else "<f4")
    code = pb.Tensor.FLOAT16 if half else pb.Tensor.FLOAT32
    return pb.Tensor(dtype=code, shape=values.shape, data=values.tobytes())


def tensor_to_array(tensor: pb.Tensor) -> np.ndarray:
    """The tensor as a writable float32 array (a FLOAT16 tensor is widened)."""
    if tensor.dtype not in _DTYPES:
        raise ValueError(f"tensor dtype {tensor.dtype} is not FLOAT32 or FLOAT16")
    shape = tuple(tensor.shape)
    values = np.frombuffer(tensor.data, dtype=_DTYPES[tensor.dtype])
    if values.size != math.prod(shape):
        raise ValueError(f"tensor of shape {list(shape)} carries {values.size} values")
    return values.reshape(shape).astype(np.float32)  # astype copies: frombuffer's view is read-only


def image_message(image: ImageSource, field: str = "image", landmarks: Landmarks | None = None) -> pb.Image:
    """Arrays travel as pixels, paths and bytes as the encoded file (the server decodes and resizes);
    `landmarks` (K, 2) as x, y in the image's pixels, flattened."""
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"{field}: an image array is (H, W, 3) or (H, W), got shape {image.shape}")
        message = pb.Image(pixels=array_to_tensor(image))
    elif isinstance(image, (bytes, bytearray)):
        message = pb.Image(encoded=bytes(image))
    elif isinstance(image, (str, os.PathLike)):
        message = pb.Image(encoded=Path(image).read_bytes())
    else:
        raise TypeError(f"{field}: give a numpy array, a file path or encoded bytes, not {type(image).__name__}")
    if landmarks is not None:
        points = np.asarray(landmarks, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"{field}.landmarks: give (x, y) points, shape (K, 2), got shape {points.shape}")
        message.landmarks.extend(points.ravel().tolist())
    return message


def target_message(target: TargetSource, field: str = "target") -> pb.Target:
    if target is None:
        return pb.Target(predicted_class=True)
    if isinstance(target, Pair):
        pair = pb.MatePair(mate=image_message(target.mate, f"{field}.mate"))
        if target.non_mate is not None:
            pair.non_mate.CopyFrom(image_message(target.non_mate, f"{field}.non_mate"))
        return pb.Target(pair=pair)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return pb.Target(class_index=int(target))
    raise TypeError(f"{field}: give a class index, a Pair(mate, non_mate) or None, not {type(target).__name__}")


def to_struct(values: Mapping[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if values:
        struct.update({str(k): _plain(v) for k, v in values.items()})
    return struct


def _plain(value: Any) -> Any:
    """numpy scalars and tuples as the Python values a Struct takes."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def from_struct(struct: struct_pb2.Struct, *, numbers: bool = False) -> dict[str, Any]:
    """A Struct as a dict; whole numbers become ints (JSON has doubles only).

    With `numbers`, the strings "nan", "inf" and "-inf" (how the server sends non-finite numbers
    of results) become floats again.
    """
    return _restore(json_format.MessageToDict(struct), numbers)


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _restore(value: Any, numbers: bool) -> Any:
    if isinstance(value, dict):
        return {k: _restore(v, numbers) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, numbers) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if numbers and isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


_MAP_FIELDS = tuple(f.name for f in dataclasses.fields(SaliencyMap) if f.name != "values")


def saliency_map(message: pb.SaliencyMap) -> SaliencyMap:
    """The SaliencyMap the server computed: its values and its metadata (SaliencyMap.metadata())."""
    meta = from_struct(message.metadata)
    values = {name: meta[name] for name in _MAP_FIELDS if name in meta}
    values["timings"] = {k: float(v) for k, v in values.get("timings", {}).items()}  # seconds stay floats
    return SaliencyMap(values=tensor_to_array(message.values), **values)
