"""Client: the faceaudit gRPC service as Python calls returning numpy arrays and SaliencyMaps.

    with Client("localhost:50051") as client:
        model = client.register_model("face.onnx", spec={"kind": "classifier"})
        saliency = client.explain(model.name, "face.png", method="occlusion", target=3,
                                  options={"patch": 8}, progress=print)

Progress callbacks take (done, total, phase), like faceaudit.methods.common.Progress, so the
CLI's ProgressBar works as one. A call with a progress callback uses the streaming RPC; an
exception raised by a callback cancels the call (the server stops within one batch) and propagates.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc
import numpy as np

from faceaudit.methods.common import Progress
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.models.spec import canonical_names, read_spec_file, spec_file_for
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc
from faceaudit_client.convert import (
    ImageSource, Landmarks, Pair, TargetSource, array_to_tensor, from_struct, image_message, saliency_map, target_message,
    to_struct,
)
from faceaudit_client.errors import MissingMapFiles, service_error

MiB = 1 << 20
CHUNK_BYTES = MiB  # model upload chunks: far below the server's message limit
# The server's default message limits (proto/README.md); grpc's own receive default is 4 MiB,
# too small for a few large maps in one Explain response.
MAX_MESSAGE_BYTES = 64 * MiB

T = TypeVar("T")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model (see ModelInfo in proto/faceaudit/v1/faceaudit.proto)."""

    name: str
    sha256: str
    size_bytes: int
    kind: str
    height: int
    width: int
    output_size: int
    white_box: bool
    batch_mode: str
    max_batch: int
    details: dict[str, Any]  # what `faceaudit models inspect --json` reports

    @classmethod
    def from_message(cls, message: pb.ModelInfo) -> ModelInfo:
        return cls(name=message.name, sha256=message.sha256, size_bytes=message.size_bytes, kind=message.kind,
                   height=message.height, width=message.width, output_size=message.output_size,
                   white_box=message.white_box, batch_mode=message.batch_mode, max_batch=message.max_batch,
                   details=from_struct(message.details))


@dataclass(frozen=True)
class Item:
    """One face of an Evaluate request: its image, target, the client's maps and an optional region."""

    image: ImageSource
    target: TargetSource = None  # None: a classifier's predicted class
    maps: Mapping[str, np.ndarray] | None = None  # method name -> (H, W) map over the model-sized image
    region: np.ndarray | None = None  # (H, W); non-zero = inside
    name: str = ""


@dataclass(frozen=True)
class GamePoint:
    """One curve point, streamed as soon as the server computed it."""

    game: str
    series: str
    index: int
    x: float
    values: dict[str, float]


ModelRef = str | ModelInfo  # a registered name, a sha256, or what register_model returned


def _model(model: ModelRef) -> str:
    return model.name if isinstance(model, ModelInfo) else str(model)


class Client:
    """A connection to one faceaudit server; use as a context manager or call close().

    `token`: the server's bearer token. `tls_root`: PEM root certificates (bytes or a file path)
    that make the channel TLS. `timeout`: default seconds per call (None: no deadline).
    """

    def __init__(self, target: str, *, token: str | None = None, tls_root: bytes | str | os.PathLike | None = None,
                 timeout: float | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if tls_root is not None:
            root = tls_root if isinstance(tls_root, bytes) else Path(tls_root).read_bytes()
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._models = rpc.ModelsStub(self.channel)
        self._explain = rpc.ExplainStub(self.channel)
        self._evaluate = rpc.EvaluateStub(self.channel)
        self._audit = rpc.AuditStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # -- calls -----------------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise service_error(exc) from None

    @contextmanager
    def _stream(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Iterator[Iterator[Any]]:
        """The response events; leaving the block early (an exception, a break) cancels the call."""
        call = method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        try:
            yield call
        except grpc.RpcError as exc:
            raise service_error(exc) from None
        finally:
            call.cancel()  # a no-op once the call has ended

    # -- Models ----------------------------------------------------------------------------------

    def register_model(self, model: str | os.PathLike | bytes, name: str | None = None, *,
                       spec: Mapping[str, Any] | None = None, chunk_bytes: int = CHUNK_BYTES,
                       timeout: float | None = None) -> ModelInfo:
        """Upload an ONNX model (a path or its bytes) in chunks; `name` defaults to the file's stem.

        `spec` overrides what the graph reveals, e.g. {"kind": "embedding", "mean": [127.5]}; for a
        path, it overrides the spec file next to the model (MODEL.spec.yaml|yml|json), as locally.
        """
        if isinstance(model, (bytes, bytearray)):
            if not name:
                raise ValueError("name: a model given as bytes needs a name")
            data = bytes(model)
        else:
            data = Path(model).read_bytes()
            name = name or Path(model).stem
            beside = spec_file_for(model)
            spec = {**(read_spec_file(beside) if beside else {}), **canonical_names(spec or {})}
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")

        def chunks() -> Iterator[pb.RegisterChunk]:
            yield pb.RegisterChunk(name=name, spec=to_struct(spec), data=data[:chunk_bytes])
            for start in range(chunk_bytes, len(data), chunk_bytes):
                yield pb.RegisterChunk(data=data[start:start + chunk_bytes])

        return ModelInfo.from_message(self._call(self._models.Register, chunks(), timeout))

    def register_from_repository(self, name: str, *, spec: Mapping[str, Any] | None = None,
                                 timeout: float | None = None) -> ModelInfo:
        """Register `<name>.onnx` of the server's --model-repository folder."""
        request = pb.RegisterFromRepositoryRequest(name=name, spec=to_struct(spec))
        return ModelInfo.from_message(self._call(self._models.RegisterFromRepository, request, timeout))

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        response = self._call(self._models.List, pb.ListModelsRequest(), timeout)
        return [ModelInfo.from_message(m) for m in response.models]

    def get_model(self, model: ModelRef, *, timeout: float | None = None) -> ModelInfo:
        return ModelInfo.from_message(self._call(self._models.Get, pb.GetModelRequest(model=_model(model)), timeout))

    def unregister_model(self, model: ModelRef, *, timeout: float | None = None) -> ModelInfo:
        response = self._call(self._models.Unregister, pb.UnregisterRequest(model=_model(model)), timeout)
        return ModelInfo.from_message(response.model)

    # -- Explain ---------------------------------------------------------------------------------

    def list_methods(self, *, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """name -> {"kinds", "black_box", "options": {name: {"type", "default"}}}."""
        response = self._call(self._explain.ListMethods, pb.ListMethodsRequest(), timeout)
        return {m.name: {"kinds": list(m.kinds), "black_box": m.black_box,
                         "options": {o.name: {"type": o.type, "default": o.default} for o in m.options}}
                for m in response.methods}

    def explain(self, model: ModelRef, image: ImageSource, *, method: str, target: TargetSource = None,
                options: Mapping[str, Any] | None = None, landmarks: Landmarks | None = None,
                progress: Progress | None = None, timeout: float | None = None) -> SaliencyMap:
        """One map of one face. `target`: a class index, Pair(mate, non_mate) (embedding models), or
        None (a classifier's predicted class). `landmarks` (cis only): the face's 5 or 68 (x, y) points in
        the image's pixels; without them the image is taken as an aligned crop."""
        (only,) = self.explain_all(model, [image], method=method, targets=None if target is None else [target],
                                   options=options, landmarks=None if landmarks is None else [landmarks],
                                   progress=progress, timeout=timeout)
        return only

    def explain_all(self, model: ModelRef, images: Sequence[ImageSource], *, method: str,
                    targets: Sequence[TargetSource] | None = None, options: Mapping[str, Any] | None = None,
                    landmarks: Sequence[Landmarks | None] | None = None, progress: Progress | None = None,
                    timeout: float | None = None) -> list[SaliencyMap]:
        """One map per (image, target), image-major: maps[i * len(targets) + j].

        With no targets a classifier is explained for its predicted class of each image. `landmarks`:
        one entry per image (None for an aligned crop), for cis. With `progress`, the phase of a request
        of several maps starts with "map k/n".
        """
        if landmarks is not None and len(landmarks) != len(images):
            raise ValueError(f"landmarks: one entry per image ({len(images)}), got {len(landmarks)}")
        marks = list(landmarks) if landmarks is not None else [None] * len(images)
        request = pb.ExplainRequest(model=_model(model), method=method, options=to_struct(options),
                                    images=[image_message(im, f"images[{i}]", marks[i]) for i, im in enumerate(images)],
                                    targets=[target_message(t, f"targets[{j}]") for j, t in enumerate(targets or ())])
        if progress is None:
            return [saliency_map(m) for m in self._call(self._explain.Explain, request, timeout).maps]
        count = len(images) * max(1, len(targets or ()))
        maps = []
        with self._stream(self._explain.ExplainStream, request, timeout) as events:
            for event in events:
                if event.HasField("map"):
                    maps.append(saliency_map(event.map))
                else:
                    step = event.progress
                    prefix = f"map {step.map_index + 1}/{count}: " if count > 1 else ""
                    progress(step.done, step.total, prefix + step.phase)
        return maps

    # -- Evaluate --------------------------------------------------------------------------------

    def list_games(self, *, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """name -> {"kinds", "inputs", "needs", "options": {name: {"type", "default"}}}."""
        response = self._call(self._evaluate.ListGames, pb.ListGamesRequest(), timeout)
        return {g.name: {"kinds": list(g.kinds), "inputs": list(g.inputs), "needs": list(g.needs),
                         "options": {o.name: {"type": o.type, "default": o.default} for o in g.options}}
                for g in response.games}

    def evaluate(self, model: ModelRef, game: str, *, items: Iterable[Item] = (), methods: Sequence[str] = (),
                 images: Sequence[ImageSource] = (), pairs: Iterable[tuple[int, int, bool]] = (),
                 parts: Mapping[str, Sequence[np.ndarray]] | None = None, options: Mapping[str, Any] | None = None,
                 on_point: Callable[[GamePoint], None] | None = None, progress: Progress | None = None,
                 timeout: float | None = None) -> dict[str, Any]:
        """Play one game; every curve point goes to `on_point` as it is computed. Returns the result
        (GameResult.to_dict(): game, x_label, x, curves, summary, options, forward_passes, notes),
        non-finite numbers as floats.

        Games judging maps take `items` (and `methods` the server computes for every item); analyses
        of the model's features take `images` and `pairs` (first, second, genuine), or `parts`
        (correspondence: part name -> one (H, W) mask per image over the model-sized image, non-zero
        inside; the server plays the parts in name order).
        """
        request = pb.EvaluateRequest(model=_model(model), game=game, options=to_struct(options), methods=list(methods),
                                     items=[_item(item, i) for i, item in enumerate(items)],
                                     images=[image_message(im, f"images[{i}]") for i, im in enumerate(images)],
                                     pairs=[pb.ImagePair(first=a, second=b, genuine=g) for a, b, g in pairs],
                                     parts=_parts(parts or {}))
        result = None
        with self._stream(self._evaluate.Evaluate, request, timeout) as events:
            for event in events:
                which = event.WhichOneof("event")
                if which == "point" and on_point is not None:
                    p = event.point
                    on_point(GamePoint(game=p.game, series=p.series, index=p.index, x=p.x, values=dict(p.values)))
                elif which == "progress" and progress is not None:
                    progress(event.progress.done, event.progress.total, event.progress.phase)
                elif which == "result":
                    result = from_struct(event.result, numbers=True)
        if result is None:
            raise RuntimeError("the Evaluate stream ended without a result")
        return result

    # -- Audit -----------------------------------------------------------------------------------

    def audit(self, model: ModelRef, dataset: str, *, methods: Sequence[str] = (), games: Sequence[str] = (),
              options: Mapping[str, Any] | None = None, group_column: str | None = None, out: str | Path | None = None,
              progress: Progress | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Audit the model over a dataset folder of the server's --dataset-repository; returns
        audit.json. With `out`, the audit's map files (maps/, which report.html links) are written
        there as they arrive, and a MissingMapFiles warning names those the summary lists but the
        server did not send; without it they stay on the server. `options`: {"cms": {...},
        "methods": {name: {...}}, "games": {name: {...}}}."""
        request = pb.AuditRequest(model=_model(model), dataset=dataset, methods=list(methods), games=list(games),
                                  options=to_struct(options), group_column=group_column or "",
                                  return_maps=out is not None)
        summary = None
        files = _FileSink(Path(out)) if out is not None else None
        try:
            with self._stream(self._audit.Audit, request, timeout) as events:
                for event in events:
                    if event.HasField("summary"):  # plain JSON already: audit.json holds no NaN or inf
                        summary = from_struct(event.summary)
                    elif event.HasField("file") and files is not None:
                        files.write(event.file)
                    elif event.HasField("progress") and progress is not None:
                        progress(event.progress.done, event.progress.total, event.progress.phase)
        finally:
            if files is not None:
                files.finish()
        if summary is None:
            raise RuntimeError("the Audit stream ended without a summary")
        missing = sorted(map_files(summary) - files.written) if files is not None else []
        if missing:
            warnings.warn(MissingMapFiles(
                f"the server sent {len(map_files(summary)) - len(missing)} of the {len(map_files(summary))} map files "
                f"the audit lists (missing: {missing[0]}{', ...' if len(missing) > 1 else ''}); a server older than "
                "AuditRequest.return_maps sends none", missing), stacklevel=2)
        return summary


MAP_FILE = re.compile(r"maps(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+\.(npy|png)")  # what an audit's maps/ holds


def map_files(summary: Any) -> set[str]:
    """The map files (maps/... paths) an audit summary refers to, each .npy with the .png report.html shows."""
    if isinstance(summary, Mapping):
        return set().union(*(map_files(value) for value in summary.values()))
    if isinstance(summary, list):
        return set().union(*(map_files(value) for value in summary))
    if isinstance(summary, str) and MAP_FILE.fullmatch(summary):
        return {summary, summary.rsplit(".", 1)[0] + ".png"}
    return set()


class _FileSink:
    """Writes streamed FileChunks under a folder. Only map files are taken: maps/… paths of plain name
    segments ending in .npy or .png, which resolve inside the folder (a path from a hostile or broken
    server cannot leave it, on any OS); a file must end with its last chunk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: set[str] = set()  # the paths of the files completed
        self._open: tuple[str, BinaryIO] | None = None

    def write(self, chunk: pb.FileChunk) -> None:
        if self._open is None or self._open[0] != chunk.path:
            if self._open is not None:
                raise RuntimeError(f"the server started {chunk.path!r} before ending {self._open[0]!r}")
            target = self.folder.joinpath(*chunk.path.split("/"))
            inside = target.resolve().is_relative_to(self.folder.resolve())
            if not MAP_FILE.fullmatch(chunk.path) or not inside:
                raise RuntimeError(f"the server sent a file that is not a map file of the output folder: "
                                   f"{chunk.path!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            self._open = (chunk.path, target.open("wb"))
        self._open[1].write(chunk.data)
        if chunk.last:
            self.written.add(chunk.path)
            self._close()

    def finish(self) -> None:
        """After the stream: a file left without its last chunk is an error (it is incomplete)."""
        if self._open is not None:
            path = self._open[0]
            self._close()
            raise RuntimeError(f"the Audit stream ended inside {path!r}: the file is incomplete")

    def _close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


def _parts(parts: Mapping[str, Sequence[np.ndarray]]) -> dict[str, pb.PartMasks]:
    if not isinstance(parts, Mapping):
        raise TypeError(f"parts: give a mapping of part name -> masks, not {type(parts).__name__}")
    return {name: pb.PartMasks(masks=[_mask_tensor(mask) for mask in masks]) for name, masks in parts.items()}


def _mask_tensor(mask: np.ndarray) -> pb.Tensor:
    """Boolean masks travel as FLOAT16 (0 and 1 exactly, half the bytes of FLOAT32)."""
    values = np.asarray(mask)
    return array_to_tensor(values.astype(np.float16) if values.dtype == bool else values)


def _item(item: Item, i: int) -> pb.EvaluateItem:
    field = f"items[{i}]"
    message = pb.EvaluateItem(image=image_message(item.image, f"{field}.image"), name=item.name,
                              maps={name: array_to_tensor(values) for name, values in (item.maps or {}).items()})
    if item.target is not None:
        message.target.CopyFrom(target_message(item.target, f"{field}.target"))
    if item.region is not None:
        message.region.CopyFrom(array_to_tensor(np.asarray(item.region, dtype=np.float32)))
    return message
