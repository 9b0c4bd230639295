from __future__ import annotations

import hashlib
import os
import tracemalloc

import numpy as np
import onnx
import pytest

from faceaudit.errors import InvalidModel, LimitExceeded
from faceaudit.models import load_model
from faceaudit.testing import zoo


def test_loads_from_path_and_bytes_with_the_same_hash(tmp_path):
    proto = zoo.vgg_classifier()
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, path)
    data = path.read_bytes()
    from_path, from_bytes = load_model(path), load_model(data)
    assert from_path.sha256 == from_bytes.sha256 == hashlib.sha256(data).hexdigest()
    assert from_path.source == str(path) and from_bytes.source == "<bytes>"
    assert from_path.proto.graph == from_bytes.proto.graph
    assert from_path.size_bytes == len(data)


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage\xff" * 10, b"hello world", "x" * 50])
def test_bytes_that_are_not_onnx_are_refused(data):
    with pytest.raises(InvalidModel, match="not an ONNX model"):
        load_model(data.encode() if isinstance(data, str) else data)


def test_truncated_model_is_refused():
    data = zoo.vgg_classifier().SerializeToString()
    with pytest.raises(InvalidModel):
        load_model(data[: len(data) // 2])


def test_checker_failure_is_reported():
    proto = zoo.vgg_classifier()
    proto.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(InvalidModel, match="checker"):
        load_model(proto.SerializeToString())


def test_missing_file(tmp_path):
    with pytest.raises(InvalidModel, match="not found"):
        load_model(tmp_path / "absent.onnx")


def test_size_limit_is_enforced_before_parsing(tmp_path):
    data = zoo.vgg_classifier().SerializeToString()
    with pytest.raises(LimitExceeded, match="max_model_bytes"):
        load_model(data, max_bytes=len(data) - 1)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x00" * 2048)  # not even valid: the size check must come first
    with pytest.raises(LimitExceeded):
        load_model(path, max_bytes=1024)
    assert load_model(data, max_bytes=len(data)).size_bytes == len(data)


def test_size_limit_counts_external_data(tmp_path):
    path = tmp_path / "m.onnx"
    zoo.save_with_external_data(zoo.vgg_classifier(), path)
    model_only = path.stat().st_size
    total = model_only + (tmp_path / "weights.bin").stat().st_size
    with pytest.raises(LimitExceeded):
        load_model(path, max_bytes=total - 1)
    assert load_model(path, max_bytes=total).size_bytes == total


def test_external_data_inside_folder_loads_and_matches_inline(tmp_path):
    proto = zoo.vgg_classifier()
    path = tmp_path / "m.onnx"
    zoo.save_with_external_data(proto, path)
    loaded = load_model(path)
    assert [t.raw_data for t in loaded.proto.graph.initializer] == [
        onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t)).raw_data for t in proto.graph.initializer
    ]
    # The hash covers the weights too: changing one weight byte changes it.
    weights = tmp_path / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert load_model(path).sha256 != loaded.sha256


def _point_external_data(path, location: str) -> None:
    proto = onnx.load_model(path, load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, path)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    zoo.save_with_external_data(zoo.vgg_classifier(), path)
    os.replace(folder / "weights.bin", tmp_path / "secret.bin")
    _point_external_data(path, location)
    with pytest.raises(InvalidModel, match="location"):
        load_model(path)


def test_external_data_symlink_escaping_the_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    zoo.save_with_external_data(zoo.vgg_classifier(), path)
    os.replace(folder / "weights.bin", tmp_path / "secret.bin")
    os.symlink(tmp_path / "secret.bin", folder / "weights.bin")
    with pytest.raises(InvalidModel, match="outside"):
        load_model(path)


def test_missing_external_file_is_reported(tmp_path):
    path = tmp_path / "m.onnx"
    zoo.save_with_external_data(zoo.vgg_classifier(), path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(InvalidModel, match="not found"):
        load_model(path)


def test_external_data_cannot_be_given_as_bytes(tmp_path):
    path = tmp_path / "m.onnx"
    zoo.save_with_external_data(zoo.vgg_classifier(), path)
    with pytest.raises(InvalidModel, match="external data"):
        load_model(path.read_bytes())


def _external(tmp_path, edit=None):
    path = tmp_path / "m.onnx"
    zoo.save_with_external_data(zoo.vgg_classifier(), path)
    if edit is not None:
        edit(tmp_path, path)
    return path


def _broken_bytes(tmp_path):
    proto = zoo.vgg_classifier()
    proto.graph.node[0].input[0] = "no_such_tensor"
    return proto.SerializeToString()


@pytest.mark.parametrize(("make", "error", "start"), [
    (lambda tmp: b"junk", InvalidModel, "model: not an ONNX model: "),
    (lambda tmp: b"\x08\x08", InvalidModel, "model: not an ONNX model: "),
    (_broken_bytes, InvalidModel, "model: it fails the ONNX checker: "),
    (lambda tmp: tmp / "absent.onnx", InvalidModel, "model: file not found: "),
    (lambda tmp: _external(tmp).read_bytes(), InvalidModel, "model: it references external data files"),
    (lambda tmp: _external(tmp, lambda t, p: _point_external_data(p, "/etc/passwd")), InvalidModel,
     "model: tensor "),
    (lambda tmp: _external(tmp, lambda t, p: (t / "weights.bin").unlink()), InvalidModel, "model: tensor "),
    (lambda tmp: bytes(2048), LimitExceeded, "model: 2,048 bytes is above the limit of 1,024"),
])
def test_every_loading_error_starts_with_the_field(tmp_path, make, error, start):
    with pytest.raises(error) as info:
        load_model(make(tmp_path), max_bytes=1024 if error is LimitExceeded else 1 << 30)
    assert str(info.value).startswith(start), str(info.value)


def test_loading_bytes_does_not_serialise_the_model_again():
    """The checker reads the bytes as given: no second copy of the model is made in Python memory."""
    proto = zoo.linear_classifier()
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(2_000_000, np.float32), "unused_weights"))
    data = proto.SerializeToString()  # ~8 MB, nearly all of it one initializer
    tracemalloc.start()
    try:
        loaded = load_model(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert peak < len(data) / 4  # serialising the proto for the checker allocated len(data) at once


def test_a_model_whose_stamp_is_fixed_is_checked_as_fixed():
    """IR 99 is beyond the checker; lowered to what the runtime reads, the model passes (the bytes would not)."""
    proto = zoo.vgg_classifier()
    proto.ir_version = 99
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto.SerializeToString())
    loaded = load_model(proto.SerializeToString())
    assert loaded.proto.ir_version < 99 and any("IR version 99" in note for note in loaded.notes)
