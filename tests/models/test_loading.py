from __future__ import annotations

import hashlib
import os

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
