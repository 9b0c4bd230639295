"""ONNX model loading, the ModelSpec that says how to feed and read a model, and graph queries."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceaudit.models.inference import infer_spec
from faceaudit.models.loading import DEFAULT_MAX_MODEL_BYTES, LoadedModel, load_model
from faceaudit.models.spec import ModelSpec, canonical_names, read_spec_file, spec_file_for

__all__ = ["DEFAULT_MAX_MODEL_BYTES", "LoadedModel", "ModelSpec", "load_model", "resolve_spec"]


def resolve_spec(
    loaded: LoadedModel, values: Mapping[str, Any] | None = None, *, spec_file: str | Path | None = None
) -> ModelSpec:
    """Inferred fields, overridden by the spec file (given, or found next to the model), then by `values`.

    A chosen input or output is applied before inference, so that layout and head are inferred
    for the tensors the user picked among several.
    """
    if spec_file is None and loaded.folder is not None:
        spec_file = spec_file_for(loaded.source)
    given = {**(read_spec_file(spec_file) if spec_file is not None else {}), **canonical_names(values or {})}
    names = {name: given[name] for name in ("input_name", "output_name") if given.get(name) is not None}
    spec = infer_spec(loaded.proto, **{k: str(v) for k, v in names.items()})
    return spec.with_values(given) if given else spec
