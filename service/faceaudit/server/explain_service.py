"""The Explain service: requests -> methods.registry.explain -> SaliencyMap messages.

Thin on purpose: validation of images and targets is convert's, validation of methods and options
the registry's; this module walks the request's (image, target) pairs and gives the canonical
method (cis) each image's correspondence with the canonical face. The maps' forward passes
together are bounded by the server's budget per request (work_budget).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from faceaudit.alignment import LandmarkAligner, PreAligned, mean_face_68
from faceaudit.alignment.templates import arcface_for_frame
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods.common import ExplainTarget, Progress, predicted_class
from faceaudit.methods.registry import METHODS, Method, explain
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.models.spec import ModelSpec
from faceaudit.server.calls import Call, Servicer, Throttle, run_streaming, streaming, unary
from faceaudit.server.convert import array_to_tensor, dict_to_struct, model_image, struct_to_dict, target_of
from faceaudit.server.model_store import Entry, ModelStore
from faceaudit.server.names import method_named
from faceaudit.server.telemetry import Telemetry
from faceaudit.server.work_budget import DEFAULT_MAX_REQUEST_PASSES, PassBudget
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc

MAX_MAPS_PER_REQUEST = 64  # images × targets; a longer job belongs in Audit


def method_info(method: Method) -> pb.MethodInfo:
    options = [
        pb.MethodOption(name=f.name, type=str(f.type), default="" if f.default is dataclasses.MISSING else repr(f.default))
        for f in dataclasses.fields(method.options)
    ]
    return pb.MethodInfo(name=method.name, kinds=sorted(method.kinds), black_box=method.black_box, options=options)


def map_message(result: SaliencyMap, image_index: int, target_index: int) -> pb.SaliencyMap:
    return pb.SaliencyMap(
        image_index=image_index, target_index=target_index, values=array_to_tensor(result.values),
        method=result.method, forward_passes=result.forward_passes, signed=result.signed, frame=result.frame,
        metadata=dict_to_struct(result.metadata()),
    )


TEMPLATES = {5: arcface_for_frame, 68: mean_face_68}  # landmark count -> canonical template for a frame shape
MARGIN = 0.5  # the template's triangulation extended beyond its hull by this fraction (the CLI's default)


def image_context(method: Method, message: pb.Image, original: tuple[int, int], image: np.ndarray, spec: ModelSpec,
                  field: str) -> dict[str, Any]:
    """What a canonical method (cis) reads besides the image: its correspondence with the canonical face,
    from the image's landmarks (5 or 68 points, onto the ArcFace or mean-face template in the model's
    frame), or, without landmarks, the model-sized crop as its own canonical frame (pre-aligned faces)."""
    if "correspondence" not in method.context:
        if message.landmarks:
            raise InvalidRequest(f"{field}.landmarks", f"{method.name} takes no landmarks: only the canonical "
                                                       "method (cis) uses them")
        return {}
    shape = (spec.require("height"), spec.require("width"))
    if not message.landmarks:
        return {"correspondence": PreAligned(shape).correspond(image)}
    values = np.asarray(message.landmarks, dtype=np.float64)
    if len(values) % 2 or len(values) // 2 not in TEMPLATES:
        raise InvalidRequest(f"{field}.landmarks", f"{len(values)} numbers: give 5 or 68 points as x0, y0, x1, y1, ...")
    sent = values.reshape(-1, 2)
    aligner = LandmarkAligner(TEMPLATES[len(sent)](shape), shape, margin=MARGIN)
    try:  # the points are checked in the sent image's own frame, then moved onto the model-sized image
        return {"correspondence": aligner.correspond(image, sent, given_in=original)}
    except InvalidRequest as exc:  # the aligner names the field "landmarks"
        raise InvalidRequest(f"{field}.landmarks", str(exc).removeprefix(f"{exc.field}: ")) from exc


def explain_maps(entry: Entry, request: pb.ExplainRequest, call: Call, progress: Callable[[int], Progress],
                 telemetry: Telemetry, max_passes: int | None) -> Iterator[pb.SaliencyMap]:
    """Every map of the request, in order; progress(k) is the callback of the k-th map."""
    method = method_named(request.method, "method")
    call.method = method.name
    model, spec = call.bind(entry), entry.model.spec
    if not request.images:
        raise InvalidRequest("images", "give at least one image")
    count = len(request.images) * max(1, len(request.targets))
    if count > MAX_MAPS_PER_REQUEST:
        raise LimitExceeded(f"images, targets: {count} maps in one request is above the limit of {MAX_MAPS_PER_REQUEST}")
    budget = PassBudget(max_passes, [method.name] * count, "images, targets", "options")
    images, contexts = [], []
    for i, message in enumerate(request.images):  # decoded straight to the model's size
        image, shape = model_image(message, spec, f"images[{i}]")
        images.append(image)
        contexts.append(image_context(method, message, shape, image, spec, f"images[{i}]"))
    targets = [target_of(t, spec, f"targets[{j}]") for j, t in enumerate(request.targets)] or [None]
    classifier = spec.require("kind") == "classifier"
    for j, target in enumerate(targets):
        field = f"targets[{j}]" if request.targets else "targets"
        if classifier and target is not None and target.class_index is None:
            raise InvalidRequest(field, "a classifier is explained for class_index or predicted_class, not a mate pair")
        if not classifier and (target is None or target.mate is None):
            raise InvalidRequest(field, "an embedding model is explained against a mate pair (pair.mate)")
    options = struct_to_dict(request.options, "options")
    for i, image in enumerate(images):
        for j, target in enumerate(targets):
            chosen = target if target is not None else ExplainTarget(class_index=predicted_class(model, image))
            k = i * len(targets) + j
            result = explain(model, method.name, image=image, target=chosen, options=options,
                             progress=budget.progress(k, progress(k)), **contexts[i])
            budget.finished(k, result.forward_passes)
            if not method.black_box:  # instrumented sessions bypass the batcher, which counts the others
                telemetry.count_forward_passes(entry.name, result.forward_passes)
            yield map_message(result, i, j if request.targets else -1)


class ExplainServicer(Servicer, rpc.ExplainServicer):
    def __init__(self, store: ModelStore, telemetry: Telemetry, max_call_s: float | None = None,
                 max_request_passes: int | None = DEFAULT_MAX_REQUEST_PASSES) -> None:
        super().__init__(telemetry, max_call_s)
        self._store = store
        self._max_passes = max_request_passes

    @unary("ListMethods")
    def ListMethods(self, request: pb.ListMethodsRequest, call: Call) -> pb.ListMethodsResponse:
        return pb.ListMethodsResponse(methods=[method_info(m) for m in METHODS.values()])

    @unary("Explain")
    def Explain(self, request: pb.ExplainRequest, call: Call) -> pb.ExplainResponse:
        entry = self._store.get(request.model)
        maps = explain_maps(entry, request, call, lambda k: call.check, self.telemetry, self._max_passes)
        return pb.ExplainResponse(maps=list(maps))

    @streaming("ExplainStream")
    def ExplainStream(self, request: pb.ExplainRequest, call: Call) -> Iterator[pb.ExplainEvent]:
        entry = self._store.get(request.model)

        def work(emit: Callable[[pb.ExplainEvent], None]) -> None:
            def progress(k: int) -> Progress:
                def send(done: int, total: int, phase: str) -> None:
                    emit(pb.ExplainEvent(progress=pb.Progress(done=done, total=total, phase=phase, map_index=k)))

                throttle = Throttle(send)

                def report(done: int, total: int, phase: str) -> None:
                    call.check()
                    throttle(done, total, phase)

                return report

            for message in explain_maps(entry, request, call, progress, self.telemetry, self._max_passes):
                emit(pb.ExplainEvent(map=message))

        yield from run_streaming(work, call)
