"""The Evaluate service: a request's items -> metrics.registry.evaluate -> streamed points and result.

Items carry the client's maps; `methods` asks the server to compute more (default options), through
the same registry the Explain service uses, within the same forward-pass budget per request. Analyses
of the model's features take images (and pairs, or parts: masks of face parts in every image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods.common import ExplainTarget, predicted_class
from faceaudit.methods.registry import explain, get_method
from faceaudit.metrics.common import GameItem, GamePoint
from faceaudit.metrics.off_session_passes import count_off_session_passes
from faceaudit.metrics.registry import GAMES, Game, evaluate
from faceaudit.models.spec import ModelSpec
from faceaudit.server.calls import Call, Servicer, Throttle, run_streaming, streaming, unary
from faceaudit.server.convert import dict_to_struct, image_to_array, struct_to_dict, target_of, tensor_to_array
from faceaudit.server.model_store import ModelStore
from faceaudit.server.names import game_named, method_named
from faceaudit.server.telemetry import Telemetry
from faceaudit.server.work_budget import DEFAULT_MAX_REQUEST_PASSES, PassBudget
from faceaudit.v1 import faceaudit_pb2 as pb
from faceaudit.v1 import faceaudit_pb2_grpc as rpc

MAX_ITEMS = 512  # images per Evaluate request; a dataset-sized job belongs in Audit
FROM_FIELD = {"genuine": "pairs"}  # game inputs built from another request field (ImagePair.genuine)


def request_fields(game: Game) -> set[str]:
    """The request fields the game's inputs are built from: what GameInfo.inputs announces."""
    return {FROM_FIELD.get(name, name) for name in game.inputs}


def game_info(game: Game) -> pb.GameInfo:
    options = [
        pb.MethodOption(name=f.name, type=str(f.type), default="" if f.default is dataclasses.MISSING else repr(f.default))
        for f in dataclasses.fields(game.options)
    ]
    # `needs` is what every item carries; a game without items (correspondence's "region": an audit's
    # rows give it its parts) has none to announce.
    needs = sorted(game.needs) if "items" in game.inputs else []
    return pb.GameInfo(name=game.name, kinds=sorted(game.kinds), inputs=sorted(request_fields(game)), needs=needs,
                       options=options)


def point_message(point: GamePoint) -> pb.GamePoint:
    values = {k: float(v) for k, v in point.values.items()}
    return pb.GamePoint(game=point.game, series=point.series, index=point.index, x=float(point.x), values=values)


def _target(model: PreparedModel, message: pb.Target | None, image: np.ndarray, field: str) -> ExplainTarget:
    target = target_of(message, model.spec, field)
    if target is not None:
        return target
    if model.spec.require("kind") != "classifier":
        raise InvalidRequest(field, "an embedding model needs a mate pair (pair.mate)")
    return ExplainTarget(class_index=predicted_class(model, image))


def _item(model: PreparedModel, message: pb.EvaluateItem, i: int, methods: list[str], call: Call,
          white_box_passes: Callable[[int], None], budget: PassBudget) -> GameItem:
    spec: ModelSpec = model.spec
    field = f"items[{i}]"
    image = image_to_array(message.image, spec, f"{field}.image")
    target = _target(model, message.target if message.HasField("target") else None, image, f"{field}.target")
    maps = {name: tensor_to_array(tensor, f"{field}.maps[{name}]") for name, tensor in message.maps.items()}
    for m, name in enumerate(methods):
        if name in maps:
            raise InvalidRequest(f"{field}.maps[{name}]", "is also in methods: send the map or ask for it, not both")
        k = i * len(methods) + m
        result = explain(model, name, image=image, target=target, progress=budget.progress(k, call.check))
        budget.finished(k, result.forward_passes)
        if not get_method(name).black_box:  # instrumented sessions bypass the batcher, which counts the others
            white_box_passes(result.forward_passes)
        maps[name] = result.values
    region = _mask(message.region, f"{field}.region") if message.HasField("region") else None
    return GameItem(image=image, target=target, maps=maps, region=region, name=message.name or str(i))


def _mask(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A boolean region or part mask: non-zero inside; NaN or ±Inf is neither, so it is refused."""
    values = tensor_to_array(tensor, field)
    if not np.isfinite(values).all():
        raise InvalidRequest(field, "holds NaN or infinite values; a mask is 0 outside and any other number inside")
    return values != 0


def _parts(request: pb.EvaluateRequest) -> dict[str, list[np.ndarray]]:
    """Part name -> its boolean mask in each image (the game plays them in name order). Counts, shapes and
    names are the game's to check."""
    return {name: [_mask(tensor, f"parts[{name}][{i}]") for i, tensor in enumerate(parts.masks)]
            for name, parts in request.parts.items()}


def game_inputs(model: PreparedModel, game: Game, request: pb.EvaluateRequest, call: Call,
                white_box_passes: Callable[[int], None], max_passes: int | None) -> dict[str, Any]:
    """The keyword inputs of the game, built from the request fields it takes (and no others)."""
    given = {name for name, present in (("items", bool(request.items) or bool(request.methods)),
                                        ("images", bool(request.images)), ("pairs", bool(request.pairs)),
                                        ("parts", bool(request.parts))) if present}
    wanted = request_fields(game)
    for name in sorted(given - wanted):
        raise InvalidRequest(name, f"{game.name} takes no {name}; it takes {', '.join(sorted(wanted))}")
    for name in sorted(wanted - given):
        raise InvalidRequest(name, f"{game.name} needs {name}")
    count = len(request.items) + len(request.images)
    if count > MAX_ITEMS:
        raise LimitExceeded(f"items: {count} images in one request is above the limit of {MAX_ITEMS}; use Audit")
    inputs: dict[str, Any] = {}
    if "items" in wanted:
        methods = [game_method(name) for name in request.methods]
        budget = PassBudget(max_passes, methods * len(request.items), "items, methods", "methods")
        inputs["items"] = [_item(model, item, i, methods, call, white_box_passes, budget)
                           for i, item in enumerate(request.items)]
    if "images" in wanted:
        inputs["images"] = [image_to_array(image, model.spec, f"images[{i}]") for i, image in enumerate(request.images)]
    if "pairs" in wanted:
        inputs["pairs"] = np.array([[p.first, p.second] for p in request.pairs], dtype=np.int64)
        inputs["genuine"] = np.array([p.genuine for p in request.pairs], dtype=bool)
    if "parts" in wanted:
        inputs["parts"] = _parts(request)
    return inputs


def game_method(name: str) -> str:
    """A method whose maps a game can read: on the input image (cis's lie on the canonical face)."""
    method = method_named(name, "methods")
    if method.context:
        raise InvalidRequest("methods", f"{method.name} maps lie on the canonical face, not on the input image the "
                                        "games perturb; audit canonical maps with cms in Audit")
    return method.name


class EvaluateServicer(Servicer, rpc.EvaluateServicer):
    def __init__(self, store: ModelStore, telemetry: Telemetry, max_call_s: float | None = None,
                 max_request_passes: int | None = DEFAULT_MAX_REQUEST_PASSES) -> None:
        super().__init__(telemetry, max_call_s)
        self._store = store
        self._max_passes = max_request_passes

    @unary("ListGames")
    def ListGames(self, request: pb.ListGamesRequest, call: Call) -> pb.ListGamesResponse:
        return pb.ListGamesResponse(games=[game_info(g) for g in GAMES.values()])

    @streaming("Evaluate")
    def Evaluate(self, request: pb.EvaluateRequest, call: Call) -> Iterator[pb.EvaluateEvent]:
        entry = self._store.get(request.model)
        game = game_named(request.game, "game")
        options = struct_to_dict(request.options, "options")

        def work(emit: Callable[[pb.EvaluateEvent], None]) -> None:
            model = call.bind(entry)
            throttle = Throttle(lambda done, total, phase: emit(pb.EvaluateEvent(
                progress=pb.Progress(done=done, total=total, phase=phase))))

            def progress(done: int, total: int, phase: str) -> None:
                call.check()
                throttle(done, total, phase)

            def unbatched(passes: int) -> None:  # the batcher counts the others
                self.telemetry.count_forward_passes(entry.name, passes)

            inputs = game_inputs(model, game, request, call, unbatched, self._max_passes)
            with count_off_session_passes(unbatched):  # games' own sessions and maps (sanity check, layers)
                result = evaluate(model, game.name, options=options, progress=progress,
                                  on_point=lambda point: emit(pb.EvaluateEvent(point=point_message(point))), **inputs)
            emit(pb.EvaluateEvent(result=dict_to_struct(result.to_dict())))

        yield from run_streaming(work, call)
