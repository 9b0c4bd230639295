"""Message conversions and the one table of domain errors -> status codes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from faceaudit.engine.batcher import BatcherClosed, RequestCancelled
from faceaudit.errors import (
    InvalidImage, InvalidModel, InvalidRequest, LimitExceeded, ModelOutputError, SpecAmbiguous, UnsupportedModel,
)
from faceaudit.server.convert import (
    AlreadyExists, NotFound, array_to_tensor, dict_to_struct, status_of, struct_to_dict, tensor_to_array,
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
    assert struct_to_dict(struct) == {"patch": 8, "keep": 0.5, "mean": [127, 127.5], "fill": "zero", "exact": True}
    assert isinstance(struct_to_dict(struct)["patch"], int)
    back = dict_to_struct({"auc": float("nan"), "n": np.int64(3), "nested": {"x": [float("inf")]}})
    assert struct_to_dict(back) == {"auc": "nan", "n": 3, "nested": {"x": ["inf"]}}
