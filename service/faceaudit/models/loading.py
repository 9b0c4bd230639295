"""Load an ONNX model from a path or from bytes, safely.

Order of checks: size (before reading anything large), protobuf parse, external-data locations
(never outside the model's folder), stamp compatibility (`compat`), then the onnx checker. The
result carries the content hash that identifies the model everywhere else. Errors start with
"model: " (the CLI's argument, the server's model), as every faceaudit error names its field.

Memory: the file's bytes are parsed, hashed and (unless a stamp was fixed) checked as they are;
the proto is never serialised again here, so loading peaks at bytes + proto + the checker's parse.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from faceaudit.errors import InvalidModel, LimitExceeded
from faceaudit.models.compat import make_loadable

DEFAULT_MAX_MODEL_BYTES = 1 << 30  # 1 GiB, model file plus external data


@dataclass(frozen=True)
class LoadedModel:
    """A validated model whose external data, if any, is inlined into `proto`."""

    proto: onnx.ModelProto
    sha256: str  # of the model file bytes followed by its external-data files in name order
    source: str  # the path, or "<bytes>"
    size_bytes: int
    notes: list[str] = field(default_factory=list)  # stamp fixes made while loading

    @property
    def folder(self) -> Path | None:
        return None if self.source == "<bytes>" else Path(self.source).parent


def load_model(source: str | os.PathLike[str] | bytes, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> LoadedModel:
    """Load and validate a model from a file path or from its serialized bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source if isinstance(source, bytes) else bytes(source)  # the checker reads bytes only
        _check_size(len(data), max_bytes)
        proto = _parse(data)
        if _external_tensors(proto):
            raise InvalidModel(
                "model: it references external data files, which cannot be resolved for a model "
                "given as bytes: save it with its weights inside (onnx.save_model(..., save_as_external_data=False))"
            )
        return _finish(proto, hashlib.sha256(data).hexdigest(), "<bytes>", len(data), data)

    path = Path(source)
    if not path.is_file():
        raise InvalidModel(f"model: file not found: {path}")
    _check_size(path.stat().st_size, max_bytes)
    data = path.read_bytes()
    proto = _parse(data)
    digest = hashlib.sha256(data)
    external = _external_files(proto, path.parent)
    total = len(data) + sum(p.stat().st_size for p in external)
    _check_size(total, max_bytes)
    for file in external:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    if external:
        external_data_helper.load_external_data_for_model(proto, str(path.parent))
    return _finish(proto, digest.hexdigest(), str(path), total, None if external else data)


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise LimitExceeded(
            f"model: {size:,} bytes is above the limit of {max_bytes:,} bytes (max_model_bytes, --max-model-bytes)"
        )


def _parse(data: bytes) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidModel(f"model: not an ONNX model: the bytes do not parse as a ModelProto ({exc})") from exc
    # Arbitrary bytes can parse as a protobuf made only of unknown fields.
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise InvalidModel("model: not an ONNX model: no IR version or no graph in the parsed bytes")
    return proto


def _finish(proto: onnx.ModelProto, sha256: str, source: str, size: int, data: bytes | None) -> LoadedModel:
    """`data`: the bytes `proto` was parsed from (None when external data was inlined since)."""
    loadable, notes = make_loadable(proto)
    try:
        # The bytes as they came when no stamp changed: serialising the proto again would copy the model.
        onnx.checker.check_model(data if loadable is proto and data is not None else loadable)
    except onnx.checker.ValidationError as exc:
        raise InvalidModel(f"model: it fails the ONNX checker: {exc}") from exc
    return LoadedModel(proto=loadable, sha256=sha256, source=source, size_bytes=size, notes=notes)


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _all_tensors(proto.graph) if external_data_helper.uses_external_data(t)]


def _external_files(proto: onnx.ModelProto, folder: Path) -> list[Path]:
    """The external-data files the model references, each proven to lie inside `folder`."""
    root = folder.resolve()
    files: set[Path] = set()
    for tensor in _external_tensors(proto):
        location = external_data_helper.ExternalDataInfo(tensor).location
        if not location or os.path.isabs(location) or Path(location).drive:
            raise InvalidModel(f"model: tensor {tensor.name!r}: external data location {location!r} must be a "
                               "relative path")
        resolved = (root / location).resolve()  # follows symlinks, so a link cannot escape either
        if not resolved.is_relative_to(root):
            raise InvalidModel(
                f"model: tensor {tensor.name!r}: external data location {location!r} points outside the model's folder"
            )
        if not resolved.is_file():
            raise InvalidModel(f"model: tensor {tensor.name!r}: external data file {location!r} not found next to "
                               "the model")
        files.add(resolved)
    return sorted(files)
