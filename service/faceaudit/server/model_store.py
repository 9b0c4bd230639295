"""The models a server holds: registered from uploaded bytes or from its model repository folder.

A model is identified by the sha256 of its bytes and by a user-chosen name; requests name either.
Repository lookups take a bare name ("<name>.onnx" inside the folder), never a path, so no client
can make the server read a file outside that folder. Sizes are bounded before anything is parsed.
This module may load and prepare models; it knows nothing of gRPC messages.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.model_info import ModelInfo
from faceaudit.models import DEFAULT_MAX_MODEL_BYTES, LoadedModel, load_model, resolve_spec
from faceaudit.server.convert import AlreadyExists, NotFound, shorten
from faceaudit.server.telemetry import Telemetry

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")
DEFAULT_MAX_MODELS = 32
# At shutdown, how long to wait for a model's runtime thread once its running batch was told to stop
# (onnxruntime checks between nodes: only a single long node makes it wait).
CLOSE_WAIT_S = 5.0

# Wraps a freshly prepared model for serving (the cross-request batcher); identity by default.
Wrap = Callable[[str, PreparedModel], PreparedModel]


@dataclass
class Entry:
    """One registered model: what requests run, and what Get/List report."""

    name: str
    model: PreparedModel
    given_spec: dict[str, Any]
    info: dict[str, Any] = field(repr=False)
    closers: list[Callable[..., None]] = field(default_factory=list, repr=False)  # (drain=, timeout=)
    unregistered: bool = False  # set before close(): calls still running on it end NOT_FOUND, not UNAVAILABLE

    @property
    def sha256(self) -> str:
        return self.model.loaded.sha256

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """End its batcher: `drain` lets queued and running work of live calls finish; wait at most `timeout`."""
        for closer in self.closers:
            closer(drain=drain, timeout=timeout)


def is_model_name(name: object) -> bool:
    """Whether `name` may name a model: NAME, and not a sha256 (which requests also use to name one)."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None and SHA256.fullmatch(name) is None


def check_name(name: str, field_name: str = "name") -> str:
    if not is_model_name(name):
        shown = shorten(name) if isinstance(name, str) else repr(name)
        raise InvalidRequest(field_name, f"{shown} must match {NAME.pattern} and not be a sha256 "
                                         "(letters, digits, '.', '_', '-'; no path separators)")
    return name


class ModelStore:
    """Thread-safe name -> Entry map; preparing a model runs outside the lock."""

    def __init__(self, *, repository: Path | None = None, runtime: RuntimeOptions = RuntimeOptions(),
                 max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES, max_models: int = DEFAULT_MAX_MODELS,
                 wrap: Wrap | None = None, telemetry: Telemetry | None = None) -> None:
        self.repository = repository.resolve() if repository is not None else None
        self.runtime = runtime
        self.max_model_bytes = max_model_bytes
        self.max_models = max_models
        self._wrap = wrap
        self._telemetry = telemetry
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def register_loaded(self, name: str, loaded: LoadedModel, spec: Mapping[str, Any]) -> Entry:
        """Register an uploaded model, loaded by the caller (which then holds its bytes no longer)."""
        check_name(name)
        return self._add(name, loaded, dict(spec))

    def register_from_repository(self, name: str, spec: Mapping[str, Any]) -> Entry:
        check_name(name)
        if self.repository is None:
            raise InvalidRequest("name", "this server has no model repository (faceaudit serve --model-repository DIR)")
        path = (self.repository / f"{name}.onnx").resolve()
        if not path.is_relative_to(self.repository) or not path.is_file():  # a symlink may not lead out
            raise NotFound(f"name: no model {name}.onnx in the model repository")
        return self._add(name, load_model(path, max_bytes=self.max_model_bytes), dict(spec))

    def _add(self, name: str, loaded: LoadedModel, given: dict[str, Any]) -> Entry:
        with self._lock:
            existing = self._entries.get(name)
            if existing is None and len(self._entries) >= self.max_models:
                raise LimitExceeded(f"name: the server holds {self.max_models} models, its limit; unregister one first")
        if existing is not None:
            return self._same(existing, loaded, given)
        spec = resolve_spec(loaded, given)
        prepared = prepare(loaded, spec, self.runtime)
        info = ModelInfo(loaded, spec, prepared).to_dict()
        if loaded.source != "<bytes>":
            info["source"] = Path(loaded.source).name  # the server's folder layout is not the client's business
        served = self._wrap(name, prepared) if self._wrap is not None else prepared
        entry = Entry(name, served, given, info)
        closer = getattr(served.session, "close", None)
        if served.session is not prepared.session and callable(closer):
            entry.closers.append(closer)
        with self._lock:
            existing = self._entries.get(name)
            full = existing is None and len(self._entries) >= self.max_models  # others registered while preparing
            if existing is None and not full:
                self._entries[name] = entry
        if full:
            entry.close()
            raise LimitExceeded(f"name: the server holds {self.max_models} models, its limit; unregister one first")
        if existing is None:
            if self._telemetry is not None:
                self._telemetry.model_loaded(name, loaded.size_bytes)
            return entry
        entry.close()  # registered concurrently under the same name
        return self._same(existing, loaded, given)

    @staticmethod
    def _same(existing: Entry, loaded: LoadedModel, given: dict[str, Any]) -> Entry:
        """The registered entry when the same bytes come again with the same spec: given alike, or resolved
        alike (the repository's spec file read on the server, its fields sent by a client's upload)."""
        if existing.sha256 != loaded.sha256 or (existing.given_spec != given and
                                                existing.model.spec.to_dict() != resolve_spec(loaded, given).to_dict()):
            raise AlreadyExists(f"name: {existing.name!r} is registered with other bytes or another spec "
                                f"(sha256 {existing.sha256[:12]}…); unregister it or choose another name")
        return existing

    def get(self, ref: str, field_name: str = "model") -> Entry:
        with self._lock:
            if ref in self._entries:
                return self._entries[ref]
            matches = [e for e in self._entries.values() if e.sha256 == ref]
        if not ref:
            raise InvalidRequest(field_name, "name a registered model (its name or sha256)")
        if not matches:
            raise NotFound(f"{field_name}: no registered model {shorten(ref)} (name or sha256); see Models.List")
        return matches[0]

    def list(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def unregister(self, ref: str) -> Entry:
        """Remove the model; its live calls' queued and running batches still finish (or stop when those calls
        end), without this call waiting for them."""
        entry = self.get(ref)
        with self._lock:
            removed = self._entries.pop(entry.name, None)
        if removed is None:
            raise NotFound(f"model: {shorten(ref)} was unregistered concurrently")
        removed.unregistered = True
        self._closed(removed, drain=True, timeout=0)
        return removed

    def close(self) -> None:
        """Shutdown: every model's queued and running batches fail at once (UNAVAILABLE)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            self._closed(entry, drain=False, timeout=CLOSE_WAIT_S)

    def _closed(self, entry: Entry, *, drain: bool, timeout: float) -> None:
        entry.close(drain=drain, timeout=timeout)
        if self._telemetry is not None:
            self._telemetry.model_unloaded(entry.name)
