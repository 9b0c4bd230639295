"""The Models service: register (uploaded chunks or the repository folder), list, get, unregister."""

from __future__ import annotations

from collections.abc import Iterator

from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.server.calls import Call, Servicer, unary
from faceaudit.server.convert import dict_to_struct, struct_to_dict
from faceaudit.server.model_store import Entry, ModelStore
from faceaudit.server.telemetry import Telemetry
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
    def __init__(self, store: ModelStore, telemetry: Telemetry) -> None:
        super().__init__(telemetry)
        self._store = store

    @unary("Register")
    def Register(self, request_iterator: Iterator[pb.RegisterChunk], call: Call) -> pb.ModelInfo:
        limit = self._store.max_model_bytes
        first: pb.RegisterChunk | None = None
        data = bytearray()
        for i, chunk in enumerate(request_iterator):
            if first is None:
                first = chunk
            elif chunk.name or chunk.HasField("spec"):
                raise InvalidRequest(f"chunks[{i}].name", "only the first chunk carries the name and the spec")
            data += chunk.data
            if len(data) > limit:  # refused as it arrives, not after buffering all of it
                raise LimitExceeded(f"data: the model is above the limit of {limit:,} bytes (--max-model-bytes)")
        if first is None:
            raise InvalidRequest("chunks", "the stream carried no chunk")
        if not first.name:
            raise InvalidRequest("name", "the first chunk must name the model")
        if not data:
            raise InvalidRequest("data", "no model bytes were sent")
        payload = bytes(data)
        del data  # one copy of the model while it is prepared, not two
        return info_message(self._store.register_bytes(first.name, payload, struct_to_dict(first.spec)))

    @unary("RegisterFromRepository")
    def RegisterFromRepository(self, request: pb.RegisterFromRepositoryRequest, call: Call) -> pb.ModelInfo:
        return info_message(self._store.register_from_repository(request.name, struct_to_dict(request.spec)))

    @unary("List")
    def List(self, request: pb.ListModelsRequest, call: Call) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[info_message(e) for e in self._store.list()])

    @unary("Get")
    def Get(self, request: pb.GetModelRequest, call: Call) -> pb.ModelInfo:
        return info_message(self._store.get(request.model))

    @unary("Unregister")
    def Unregister(self, request: pb.UnregisterRequest, call: Call) -> pb.UnregisterResponse:
        return pb.UnregisterResponse(model=info_message(self._store.unregister(request.model)))
