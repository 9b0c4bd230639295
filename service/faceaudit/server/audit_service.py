"""The Audit service: a dataset folder of the server's dataset repository -> audit.run.run_audit.

The audit writes its files into a temporary folder that is removed when the call ends; the client
gets audit.json (numbers, options, versions) as the summary and, with return_maps, the map files
report.html links (maps/), so that it can write the report itself (faceaudit audit --server does).
Dataset names are names, never paths: the folder must lie inside the repository (symlinks leading
out are refused).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from faceaudit.audit.run import run_audit
from faceaudit.errors import InvalidRequest
from faceaudit.metrics.off_session_passes import count_off_session_passes
from faceaudit.server.calls import Call, Servicer, Throttle, run_streaming, streaming
from faceaudit.server.convert import NotFound, dict_to_struct, struct_to_dict
from faceaudit.server.model_store import ModelStore, check_name
from faceaudit.server.telemetry import Telemetry
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc


def dataset_folder(repository: Path | None, name: str) -> Path:
    if repository is None:
        raise InvalidRequest("dataset", "this server has no dataset repository (faceaudit serve --dataset-repository DIR)")
    check_name(name, "dataset")
    root = repository.resolve()
    folder = (root / name).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise NotFound(f"dataset: no dataset folder {name!r} in the dataset repository")
    return folder


CHUNK_BYTES = 1 << 20  # per FileChunk: far below the message limit


def map_chunks(out: Path) -> Iterator[pb.FileChunk]:
    """The files under out/maps in path order, in chunks of at most CHUNK_BYTES (one chunk for an empty file)."""
    for path in sorted(p for p in (out / "maps").rglob("*") if p.is_file()):
        relative = path.relative_to(out).as_posix()
        with path.open("rb") as handle:
            data = handle.read(CHUNK_BYTES)
            while True:
                following = handle.read(CHUNK_BYTES)
                yield pb.FileChunk(path=relative, data=data, last=not following)
                if not following:
                    break
                data = following


class AuditServicer(Servicer, rpc.AuditServicer):
    def __init__(self, store: ModelStore, telemetry: Telemetry, datasets: Path | None,
                 max_call_s: float | None = None) -> None:
        super().__init__(telemetry, max_call_s)
        self._store = store
        self._datasets = datasets

    @streaming("Audit")
    def Audit(self, request: pb.AuditRequest, call: Call) -> Iterator[pb.AuditEvent]:
        entry = self._store.get(request.model)
        folder = dataset_folder(self._datasets, request.dataset)
        options = struct_to_dict(request.options, "options") or None
        with tempfile.TemporaryDirectory(prefix="faceaudit-audit-") as out:

            def work(emit: Callable[[pb.AuditEvent], None]) -> None:
                throttle = Throttle(lambda done, total, phase: emit(pb.AuditEvent(
                    progress=pb.Progress(done=done, total=total, phase=phase))))

                def progress(done: int, total: int, phase: str) -> None:
                    call.check()
                    throttle(done, total, phase)

                # The batcher counts black-box passes; white-box maps and the games' own sessions pass
                # theirs to this meter as they run (a map the audit's cache holds runs none).
                with count_off_session_passes(lambda passes: self.telemetry.count_forward_passes(entry.name, passes)):
                    path = run_audit(call.bind(entry), folder, out, methods=list(request.methods) or None,
                                     games=list(request.games) or None, options=options, progress=progress,
                                     group_column=request.group_column or None)
                summary = json.loads(Path(path).read_text(encoding="utf-8"))
                summary["dataset"]["path"] = request.dataset  # the server's folder layout is not the client's
                summary["model"].update(name=entry.name, path=entry.info["source"])
                emit(pb.AuditEvent(summary=dict_to_struct(summary)))

            yield from run_streaming(work, call)
            if request.return_maps:  # read here, one chunk per message the client takes: memory stays bounded
                for chunk in map_chunks(Path(out)):
                    call.check()
                    yield pb.AuditEvent(file=chunk)
