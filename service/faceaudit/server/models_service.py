"""The Models service: register (uploaded chunks or the repository folder), list, get, unregister.

Uploads are received by server.upload (deadlines, one buffer, a few at a time)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from faceaudit.models import load_model
from faceaudit.server.calls import Call, Servicer, unary
from faceaudit.server.convert import dict_to_struct, struct_to_dict
from faceaudit.server.model_store import Entry, ModelStore
from faceaudit.server.telemetry import Telemetry
from faceaudit.server.upload import (
    DEFAULT_MAX_CONCURRENT_UPLOADS, DEFAULT_UPLOAD_IDLE_S, DEFAULT_UPLOAD_TOTAL_S, UploadLimits, UploadSlots, receive,
)
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc


def info_message(entry: Entry) -> pb.ModelInfo:
    model, info = entry.model, entry.info
    return pb.ModelInfo(
        name=entry.name, sha256=entry.sha256, size_bytes=model.loaded.size_bytes, kind=model.spec.kind or "",
        height=model.spec.require("height"), width=model.spec.require("width"), output_size=int(model.output_size),
        white_box=info["white_box"] == "available", batch_mode=model.batch.mode, max_batch=model.session.max_batch,
        details=dict_to_struct(info),
    )


class ModelsServicer(Servicer, rpc.ModelsServicer):
    def __init__(self, store: ModelStore, telemetry: Telemetry, *, idle_s: float = DEFAULT_UPLOAD_IDLE_S,
                 total_s: float = DEFAULT_UPLOAD_TOTAL_S, max_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS) -> None:
        super().__init__(telemetry)
        self._store = store
        self._limits = UploadLimits(idle_s=idle_s, total_s=total_s, max_bytes=store.max_model_bytes)
        self._slots = UploadSlots(max_uploads)
        # Parsing and preparing peak at ~5× the model (proto, checker, runtime session): one model (upload or
        # repository file) at a time, while other uploads may still be receiving (1× each).
        self._preparing = threading.Lock()

    @unary("Register")
    def Register(self, request_iterator: Iterator[pb.RegisterChunk], call: Call) -> pb.ModelInfo:
        with self._slots.slot():  # held until the model is prepared: it bounds the memory of uploads too
            name, spec, data = receive(request_iterator, self._limits)
            with self._preparing:
                loaded = load_model(data, max_bytes=self._store.max_model_bytes)
                del data  # the model is prepared from its parsed form alone, not beside its bytes
                return info_message(self._store.register_loaded(name, loaded, spec))

    @unary("RegisterFromRepository")
    def RegisterFromRepository(self, request: pb.RegisterFromRepositoryRequest, call: Call) -> pb.ModelInfo:
        spec = struct_to_dict(request.spec, "spec")
        with self._preparing:  # one model prepared at a time, whichever way it came
            return info_message(self._store.register_from_repository(request.name, spec))

    @unary("List")
    def List(self, request: pb.ListModelsRequest, call: Call) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[info_message(e) for e in self._store.list()])

    @unary("Get")
    def Get(self, request: pb.GetModelRequest, call: Call) -> pb.ModelInfo:
        return info_message(self._store.get(request.model))

    @unary("Unregister")
    def Unregister(self, request: pb.UnregisterRequest, call: Call) -> pb.UnregisterResponse:
        return pb.UnregisterResponse(model=info_message(self._store.unregister(request.model)))
