"""ONNX model loading, the ModelSpec that says how to feed and read a model, and graph queries."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceaudit.models.inference import infer_spec
from faceaudit.models.loading import DEFAULT_MAX_MODEL_BYTES, LoadedModel, load_model
from faceaudit.models.spec import ModelSpec, read_spec_file, spec_file_for

__all__ = ["DEFAULT_MAX_MODEL_BYTES", "LoadedModel", "ModelSpec", "load_model", "resolve_spec"]


def resolve_spec(
    loaded: LoadedModel, values: Mapping[str, Any] | None = None, *, spec_file: str | Path | None = None
) -> ModelSpec:
    """Inferred fields, overridden by the spec file (given, or found next to the model), then by `values`."""
    spec = infer_spec(loaded.proto)
    if spec_file is None and loaded.folder is not None:
        spec_file = spec_file_for(loaded.source)
    if spec_file is not None:
        spec = spec.with_values(read_spec_file(spec_file))
    return spec.with_values(values) if values else spec
