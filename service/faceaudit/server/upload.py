"""Receiving a model upload (Models.Register's chunk stream) within a server's limits.

A client that opens an upload and then stalls must not hold a call slot for ever: the chunks are
read on a helper thread and the RPC's thread waits for each with the idle timeout, and for all of
them with the total deadline (grpc's request iterator itself waits without a timeout). Uploads
also take one of a few upload slots, so uploads can never occupy every call the server admits.
The bytes gather in one buffer; the caller gets them as one bytes object and nothing else keeps
them. This module reads messages and raises faceaudit errors; it parses no model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.models import DEFAULT_MAX_MODEL_BYTES
from faceaudit.server.convert import CallEnded, TimeLimit, struct_to_dict
from faceaudit.server.model_store import check_name
from faceaudit.v1 import faceaudit_pb2 as pb

DEFAULT_UPLOAD_IDLE_S = 30.0  # the longest wait for the next chunk (the first included)
DEFAULT_UPLOAD_TOTAL_S = 600.0  # a whole upload: 1 GiB (the default model limit) at ~1.8 MB/s
DEFAULT_MAX_CONCURRENT_UPLOADS = 4
_BUFFERED_CHUNKS = 4  # read ahead by the helper thread: a few messages, not a model
_END = object()


@dataclass(frozen=True)
class UploadLimits:
    idle_s: float = DEFAULT_UPLOAD_IDLE_S
    total_s: float = DEFAULT_UPLOAD_TOTAL_S
    max_bytes: int = DEFAULT_MAX_MODEL_BYTES


class UploadSlots:
    """At most `limit` uploads at once; one more is refused at once (RESOURCE_EXHAUSTED), not queued."""

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT_UPLOADS) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise LimitExceeded(f"max_concurrent_uploads: the server is receiving {self.limit} uploads, its limit "
                                "(--max-concurrent-uploads); retry later")
        try:
            yield
        finally:
            self._free.release()


def receive(chunks: Iterator[pb.RegisterChunk], limits: UploadLimits) -> tuple[str, dict[str, Any], bytes]:
    """The upload's name, spec and model bytes, each checked as soon as it arrives.

    TimeLimit when a chunk is awaited longer than limits.idle_s or the upload outlasts
    limits.total_s; LimitExceeded past limits.max_bytes; CallEnded when the client went away.
    """
    arrived: queue.Queue[Any] = queue.Queue(maxsize=_BUFFERED_CHUNKS)
    stop = threading.Event()
    threading.Thread(target=_read, args=(chunks, arrived, stop), name="faceaudit-upload", daemon=True).start()
    deadline = time.monotonic() + limits.total_s
    name, spec, data, count = "", {}, bytearray(), 0
    try:
        while (chunk := _next(arrived, deadline, limits)) is not _END:
            if count == 0:  # name and spec are checked before any more bytes are taken
                if not chunk.name:
                    raise InvalidRequest("name", "the first chunk must name the model")
                name, spec = check_name(chunk.name), struct_to_dict(chunk.spec, "spec")
            elif chunk.name or chunk.HasField("spec"):
                raise InvalidRequest(f"chunks[{count}].name", "only the first chunk carries the name and the spec")
            count += 1
            data += chunk.data
            if len(data) > limits.max_bytes:  # refused as it arrives, not after buffering all of it
                raise LimitExceeded(f"data: the model is above the limit of {limits.max_bytes:,} bytes "
                                    "(--max-model-mib)")
    finally:
        stop.set()  # the reader ends once grpc ends the call (its pending read then returns)
    if count == 0:
        raise InvalidRequest("chunks", "the stream carried no chunk")
    if not data:
        raise InvalidRequest("data", "no model bytes were sent")
    payload = bytes(data)  # the form onnx's checker reads without another copy (models/loading.py)
    del data
    return name, spec, payload


def _next(arrived: queue.Queue[Any], deadline: float, limits: UploadLimits) -> Any:
    wait = min(limits.idle_s, deadline - time.monotonic())
    try:
        if wait <= 0:
            raise queue.Empty
        item = arrived.get(timeout=wait)
    except queue.Empty:
        if time.monotonic() >= deadline:
            raise TimeLimit(f"upload_total_s: the upload took longer than {limits.total_s:g} s, this server's limit "
                            "(--upload-total-s)") from None
        raise TimeLimit(f"upload_idle_s: no chunk arrived for {limits.idle_s:g} s, this server's limit "
                        "(--upload-idle-s)") from None
    if isinstance(item, BaseException):
        raise CallEnded from item  # grpc's iterator raises only once the client cancelled
    return item


def _read(chunks: Iterator[pb.RegisterChunk], arrived: queue.Queue[Any], stop: threading.Event) -> None:
    """Hand the stream's messages over, then _END or the error that ended it; stop once nobody waits."""
    try:
        for chunk in chunks:
            if not _offer(arrived, chunk, stop):
                return
        _offer(arrived, _END, stop)
    except BaseException as error:  # noqa: BLE001 - handed to the RPC's thread
        _offer(arrived, error, stop)


def _offer(arrived: queue.Queue[Any], item: Any, stop: threading.Event, poll_s: float = 0.1) -> bool:
    while not stop.is_set():
        try:
            arrived.put(item, timeout=poll_s)
            return True
        except queue.Full:
            continue
    return False

