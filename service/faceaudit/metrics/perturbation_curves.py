"""The engine of the perturbation games (hiding, deletion, insertion): take pixels in each map's order, score, average.

It may touch the prepared model through one Scorer over the raw output (OutputTarget); the games
choose the order, the step counts, the base image and what taken pixels become.

Play:
    every series (each method's maps, sorted by name, then the uniform-random map "random") is
    played at the same pixel counts c_0 ≤ c_1 ≤ … At count c the image is blend(base, fill, m),
    m the first c pixels of the map's order (ordering.taken; ties in ordering's seeded random
    order, keyed by the game's seed and the image's index), blurred into a soft mask when a sigma
    is given. All images of one step go through the scorer together, in chunks bounded by
    methods.common.chunk_size; a step's point is handed to `on_point` as soon as its last chunk is
    scored. Steps with c = 0 (the base images) or c = all pixels (the fill images) do not depend on
    the map: they are scored once, before any series, and shared by every series' curve.
Outcomes per image, from the raw output row:
    classifier: score = the true class's output (softmax of the outputs when spec.softmax, as the
    scorer does); success = argmax == the true class (first maximum on ties).
    embedding: c_m, c_n = cosine of the perturbed probe's embedding to the mate's, the non-mate's
    (the references are embedded in the same scorer, first); score = c_m, or c_m − c_n when the
    items have non-mates (methods.common.contrast); success = c_m ≥ τ when τ is given, else
    c_m > c_n; without τ and non-mate success is undefined (NaN; deletion and insertion ignore it).
Forward passes:
    mates (and non-mates) once each, the shared steps once per image, every other step once per
    image and series: n·(r + s + S·k) for n images, r references per image, s shared steps, S
    series and k other steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import OutputTarget, Scorer
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.methods.common import check_passes, check_request, chunk_size
from faceaudit.metrics.common import GameItem, GamePoint, PointSink, Progress
from faceaudit.metrics.ordering import blend, pixel_ranks, soft_mask, taken

RANDOM = "random"  # the uniform-random baseline series
MAX_CHUNK = 4096


@dataclass(frozen=True)
class Faces:
    """The games' validated inputs: model-sized float32 images and per-image targets."""

    images: list[np.ndarray]
    maps: dict[str, list[np.ndarray]]  # method -> one (H, W) map per image
    classes: np.ndarray | None = None  # classifiers: the true class of each image
    mates: list[np.ndarray] | None = None  # embedding models
    non_mates: list[np.ndarray] | None = None  # embedding models, when the items have them


def check_faces(model: PreparedModel, items: Sequence[GameItem], *, need_non_mate: bool) -> Faces:
    """Validate every item's image and target against the model (fields named items[i]....).

    Classifiers need a true class per image; embedding models a mate, and a non-mate when
    `need_non_mate`; non-mates come with every item or with none, so every image's score means
    the same. The method name "random" is kept for the baseline.
    """
    if RANDOM in items[0].maps:
        raise InvalidRequest("items", f"the method name {RANDOM!r} is reserved for the uniform-random baseline")
    model.check_vector_output()
    images, targets = [], []
    for i, item in enumerate(items):
        try:
            image, target = check_request(model, item.image, item.target)
        except InvalidRequest as exc:
            raise InvalidRequest(f"items[{i}].{exc.field}", str(exc).split(": ", 1)[1]) from exc
        images.append(image)
        targets.append(target)
    # check_items has checked the maps' shapes and values; they are ranked one series at a time, never copied here
    maps = {name: [np.asarray(item.maps[name]) for item in items] for name in sorted(items[0].maps)}
    if model.spec.require("kind") == "classifier":
        return Faces(images, maps, classes=np.array([t.class_index for t in targets]))
    with_non_mate = [t.non_mate is not None for t in targets]
    for i, has in enumerate(with_non_mate):
        if need_non_mate and not has:
            raise InvalidRequest(f"items[{i}].target", "this game needs a non-mate image for every probe")
        if has != with_non_mate[0]:
            raise InvalidRequest(f"items[{i}].target",
                                 "give a non-mate for every probe or for none: scores must mean the same")
    non_mates = [t.non_mate for t in targets] if with_non_mate[0] else None
    return Faces(images, maps, mates=[t.mate for t in targets], non_mates=non_mates)  # type: ignore[misc]


@dataclass(frozen=True)
class Plan:
    """How a game perturbs: which pixels go first, at which counts, from what into what."""

    game: str
    counts: np.ndarray  # pixels taken at each step, non-decreasing
    descending: bool  # most important pixels first (deletion, insertion) or least (hiding)
    base: Sequence[np.ndarray]  # per image, the image at count 0
    fill: Sequence[np.ndarray]  # per image, what taken pixels become
    mask_sigma: float | None  # blur the taken-pixel mask by this Gaussian (px): a soft mask
    tau: float | None  # embedding success threshold on c_m; None: c_m > c_n
    seed: int  # of the random baseline maps and of the tie order (ordering.tie_order)
    chunk: int  # images per streamed chunk, before the memory bound


@dataclass
class Played:
    """The curves (series -> quantity -> values along x), the shared steps' mean scores, the passes spent."""

    x: list[float]  # fraction of pixels taken at each step
    curves: dict[str, dict[str, list[float]]]
    ends: dict[int, float]  # mean score of each shared step, by pixel count
    forward_passes: int


# values(mean score, success rate) of one step -> the quantities of its GamePoint
Values = Callable[[float, float], dict[str, float]]


def play(model: PreparedModel, faces: Faces, plan: Plan, *, values: Callable[[dict[int, float]], Values],
         on_point: PointSink | None, progress: Progress | None) -> Played:
    """Play every series of the plan; the points' quantities come from `values(ends)`.

    `values` is called once the shared steps are scored, before any series, with their mean
    scores by pixel count (`ends`): it may raise for a degenerate game before its passes are
    spent, or use the ends (normalised curves).
    """
    n, pixels = len(faces.images), faces.images[0].shape[0] * faces.images[0].shape[1]
    series = [*faces.maps, RANDOM]
    counts = [int(c) for c in plan.counts]
    shared = sorted({c for c in counts if c in (0, pixels)})
    own = [c for c in counts if c not in shared]
    references = [] if faces.mates is None else faces.mates + (faces.non_mates or [])
    total = len(references) + n * len(shared) + n * len(series) * len(own)
    check_passes("steps", total)
    chunk = chunk_size(plan.chunk, faces.images[0], copies=3)  # base, fill and the blend alive at once
    starts = range(0, n, chunk)
    scorer = Scorer(model, OutputTarget())
    done = 0

    def scored(stream: Iterator[np.ndarray]) -> np.ndarray:
        nonlocal done
        out = next(stream)
        done += len(out)
        if progress is not None:
            progress(done, total, plan.game)
        return out

    # Prelude: references, then the shared steps, in one stream.
    def prelude() -> Iterator[np.ndarray]:
        for start in range(0, len(references), chunk):
            yield np.stack(references[start : start + chunk])
        for count in shared:
            for start in starts:
                yield _perturbed(plan, start, min(start + chunk, n), np.full((1, 1, 1), count > 0))

    stream = scorer.stream(prelude())
    raw_refs = [scored(stream) for _ in range(0, len(references), chunk)]
    judge = _Judge(model, faces, np.concatenate(raw_refs) if raw_refs else None, plan.tau)
    outcomes = {count: _outcomes(judge, [scored(stream) for _ in starts]) for count in shared}
    stream.close()
    ends = {count: float(np.mean(score)) for count, (score, _) in outcomes.items()}
    quantities = values(ends)

    rng = np.random.default_rng(plan.seed)
    shape = faces.images[0].shape[:2]

    def chunks() -> Iterator[np.ndarray]:
        for name in series:  # one series' ranks alive at a time
            maps = (rng.random(shape) for _ in range(n)) if name == RANDOM else faces.maps[name]
            ranks = np.stack([pixel_ranks(m, descending=plan.descending, seed=plan.seed, index=i)
                              for i, m in enumerate(maps)])
            for count in own:
                for start in starts:
                    stop = min(start + chunk, n)
                    yield _perturbed(plan, start, stop, taken(ranks[start:stop], count))

    stream = scorer.stream(chunks())
    x = [count / pixels for count in counts]
    curves: dict[str, dict[str, list[float]]] = {}
    for name in series:
        curves[name] = {}
        for index, count in enumerate(counts):
            if count in outcomes:
                score, success = outcomes[count]
            else:
                score, success = _outcomes(judge, [scored(stream) for _ in starts])
            point = quantities(float(np.mean(score)), float(np.mean(success)))
            for key, value in point.items():
                curves[name].setdefault(key, []).append(value)
            if on_point is not None:
                on_point(GamePoint(plan.game, name, index, x[index], point))
    stream.close()
    return Played(x, curves, ends, scorer.stats.images)


def _perturbed(plan: Plan, start: int, stop: int, mask: np.ndarray) -> np.ndarray:
    """Images start..stop−1 with their masked pixels taken from the fill (mask broadcast per image)."""
    base = np.stack(plan.base[start:stop])
    fill = np.stack(plan.fill[start:stop])
    mask = np.broadcast_to(mask, (stop - start, *base.shape[1:3]))
    if plan.mask_sigma is not None:
        return blend(base, fill, soft_mask(mask, plan.mask_sigma))
    return blend(base, fill, mask)


class _Judge:
    """Score and success of each image from its raw output row (see the module docstring)."""

    def __init__(self, model: PreparedModel, faces: Faces, raw_references: np.ndarray | None,
                 tau: float | None) -> None:
        self._classes = faces.classes
        self._softmax = bool(model.spec.softmax)
        self._tau = tau
        self._mates = self._non_mates = None
        if raw_references is not None:
            units = _unit(raw_references, "reference (mate or non-mate)")
            n = len(faces.images)
            self._mates = units[:n]
            self._non_mates = units[n:] if faces.non_mates is not None else None

    def __call__(self, raw: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(start, start + len(raw))
        if self._mates is None:
            classes = self._classes[rows]  # type: ignore[index]
            out = raw.astype(np.float64)
            if self._softmax:
                shifted = np.exp(out - out.max(axis=1, keepdims=True))
                score = shifted[np.arange(len(out)), classes] / shifted.sum(axis=1)
            else:
                score = out[np.arange(len(out)), classes]
            return score, np.argmax(out, axis=1) == classes
        units = _unit(raw, "perturbed probe")
        mate = np.einsum("ij,ij->i", units, self._mates[rows])
        if self._non_mates is None:
            return mate, mate >= self._tau if self._tau is not None else np.full(len(mate), np.nan)
        non_mate = np.einsum("ij,ij->i", units, self._non_mates[rows])
        return mate - non_mate, mate >= self._tau if self._tau is not None else mate > non_mate


def _unit(raw: np.ndarray, what: str) -> np.ndarray:
    emb = raw.astype(np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ModelOutputError(f"the model returned an all-zero embedding for a {what}: cosine undefined")
    return emb / norms


def _outcomes(judge: _Judge, parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Scores and successes of all images of one step, from its chunks' raw outputs in order."""
    results, start = [], 0
    for raw in parts:
        results.append(judge(raw, start))
        start += len(raw)
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def is_number(value: object) -> bool:
    """A finite real number (bools are not)."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return number and bool(np.isfinite(value))  # type: ignore[arg-type]


def check_number(name: str, value: object, what: str, ok: Callable[[float], bool]) -> None:
    """InvalidRequest naming the option unless `value` is a finite number that `ok` accepts."""
    if not is_number(value) or not ok(float(value)):  # type: ignore[arg-type]
        raise InvalidRequest(name, f"{value!r} must be {what}")
