"""Message conversions and the one table of domain errors -> status codes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from faceaudit.engine.batcher import BatcherClosed, RequestCancelled
from faceaudit.errors import (
    InvalidImage, InvalidModel, InvalidRequest, LimitExceeded, ModelOutputError, SpecAmbiguous, UnsupportedModel,
)
from faceaudit.server.convert import (
    ECHO_CHARS, AlreadyExists, NotFound, TimeLimit, array_to_tensor, dict_to_struct, shorten, status_of,
    struct_to_dict, tensor_to_array,
)
from faceaudit.v1 import faceaudit_pb2 as pb


@pytest.mark.parametrize(("error", "code"), [
    (InvalidRequest("f", "m"), grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidImage("f", "m"), grpc.StatusCode.INVALID_ARGUMENT),
    (SpecAmbiguous("kind", "--kind", "why"), grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidModel("m"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("m"), grpc.StatusCode.NOT_FOUND),
    (AlreadyExists("m"), grpc.StatusCode.ALREADY_EXISTS),
    (UnsupportedModel("m"), grpc.StatusCode.FAILED_PRECONDITION),
    (ModelOutputError("m"), grpc.StatusCode.FAILED_PRECONDITION),
    (LimitExceeded("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RequestCancelled("m"), grpc.StatusCode.CANCELLED),
    (BatcherClosed("m"), grpc.StatusCode.UNAVAILABLE),
    (TimeLimit("m"), grpc.StatusCode.DEADLINE_EXCEEDED),
    (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
])
def test_status_of_each_error(error, code):
    assert status_of(error) == code


def test_tensor_round_trip_little_endian():
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    tensor = array_to_tensor(values)
    assert tensor.data == values.astype("<f4").tobytes()
    np.testing.assert_array_equal(tensor_to_array(tensor, "t"), values)
    half = pb.Tensor(dtype=pb.Tensor.FLOAT16, shape=[3], data=np.array([1, 0.5, -2], "<f2").tobytes())
    np.testing.assert_array_equal(tensor_to_array(half, "t"), np.array([1, 0.5, -2], np.float32))


@pytest.mark.parametrize(("tensor", "field"), [
    (pb.Tensor(shape=[1], data=bytes(4)), "t.dtype"),
    (pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=[], data=b""), "t.shape"),
    (pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=[2, 0], data=b""), "t.shape"),
    (pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=[1, 1, 1, 1, 1], data=bytes(4)), "t.shape"),
    (pb.Tensor(dtype=pb.Tensor.FLOAT32, shape=[3], data=bytes(8)), "t.data"),
])
def test_bad_tensors_name_the_field(tensor, field):
    with pytest.raises(InvalidRequest) as info:
        tensor_to_array(tensor, "t")
    assert info.value.field == field


def test_struct_whole_numbers_become_ints_and_non_finite_numbers_text():
    struct = pb.ExplainRequest().options
    struct.update({"patch": 8, "keep": 0.5, "mean": [127.0, 127.5], "fill": "zero", "exact": True})
    assert struct_to_dict(struct, "options") == {"patch": 8, "keep": 0.5, "mean": [127, 127.5], "fill": "zero",
                                                 "exact": True}
    assert isinstance(struct_to_dict(struct, "options")["patch"], int)
    back = dict_to_struct({"auc": float("nan"), "n": np.int64(3), "nested": {"x": [float("inf")]}})
    assert struct_to_dict(back, "summary") == {"auc": "nan", "n": 3, "nested": {"x": ["inf"]}}


def test_struct_reads_as_json_format_does_with_whole_numbers_as_ints():
    values = {"a": 1.5, "b": [1.0, "x", None, True, {"c": 2.0, "d": [0.25, []]}], "e": {"f": {"g": -3.0}}, "h": None,
              "i": 2.0**60}
    struct = pb.ExplainRequest().options
    struct.update(values)
    read = struct_to_dict(struct, "options")
    assert read == json_format.MessageToDict(struct)  # 1.0 == 1: the same values
    assert isinstance(read["b"][4]["c"], int) and isinstance(read["e"]["f"]["g"], int)  # nested whole numbers too
    assert isinstance(read["i"], float)  # beyond 2**53 a double is not an exact int


@pytest.mark.parametrize(("values", "field"), [
    ({"patch": float("nan")}, "options.patch"),
    ({"scale": float("inf")}, "options.scale"),
    ({"mean": [1.0, float("-inf")]}, "options.mean[1]"),
    ({"methods": {"occlusion": {"patch": float("nan")}}}, "options.methods.occlusion.patch"),
    ({"a": [{"b": [float("nan")]}]}, "options.a[0].b[0]"),
])
def test_non_finite_numbers_are_refused_naming_their_path(values, field):
    struct = pb.ExplainRequest().options
    struct.update(values)
    with pytest.raises(ValueError, match="Fail to serialize"):
        json_format.MessageToDict(struct)  # what the server used to call: INTERNAL
    with pytest.raises(InvalidRequest) as info:
        struct_to_dict(struct, "options")
    assert info.value.field == field and "NaN/Inf" in str(info.value)


def test_long_values_are_quoted_short():
    assert shorten("abc") == "'abc'" and shorten("x" * ECHO_CHARS) == repr("x" * ECHO_CHARS)
    quoted = shorten("y" * 10_000)
    assert quoted.startswith(repr("y" * (ECHO_CHARS // 2)) + "…") and "10,000 characters" in quoted
    assert len(quoted) < ECHO_CHARS
