"""Average drop %, % increase in confidence and win % on negative explanation images (John et al.).

Math (John et al. 2021, §4.2, eqs. 7–11):
    H'_m = (h_m − min h_m) / (max h_m − min h_m)        each method's map rescaled to [0, 1]  (eq. 8)
    H_m  = s / ΣH'_m · H'_m                              the same mass s for every map of an image (eq. 8)
    E_m  = (1 − H_m) ⊙ I                                 negative explanation image: salient pixels darkened (eq. 7)
    average drop %        = 100/N' Σ_n max(0, M(I_n) − M(E_n)) / M(I_n)        over the N' images with M(I_n) > 0
    % increase in conf.   = 100/N  Σ_n 1[M(E_n) > M(I_n)]
    win %_m               = 100/N  Σ_n 1[M(E^m_n) is the lowest of the compared methods' M(E_n)]
    M is the target score: the class score (softmax(output)_k when the spec asks for softmax, else the
    output as the spec reads it) for classifiers, cos(probe, mate) for embedding models (a non-mate
    in the target is not used here: the score whose drop is measured is the match to the mate).
Choices the paper leaves open (documented in GameResult.notes too):
    * The mass s: the paper says only that it is one scalar per image. We take s = min_m ΣH'_m, the
      largest common mass for which every H_m stays within [0, 1], so that E_m is a darkening of I
      (never a negative pixel) and no map is clipped (which would break the equal mass). The
      sparsest map is used as rescaled; the others are scaled down to its mass.
    * Eq. 9 is misprinted in the paper ("max(0, M(E_n) − M(I_n)M(E_N))"); we use the definition of
      the paper it adopts ([12], Chattopadhyay et al., Grad-CAM++, WACV 2018 §6.1): the relative
      drop max(0, Y − O)/Y with Y the original and O the explanation image's score.
    * Win % ties: when several methods share the lowest score of an image (exactly), the image's
      one win is split equally among them, so win % still sums to 100 over the compared methods.
    * A constant map cannot be rescaled (max = min): refused, naming the item and the method.
    * Images whose original score is ≤ 0 (a cosine or a logit) have no relative drop: they are left
      out of the average drop (counted in `drop_images`), but kept in % increase and win %.
Sign convention: average_drop_pct ≥ 0 and higher is better (darkening the salient pixels removed
more confidence); increase_pct: lower is better; win_pct: higher is better.
Random baseline (series "random", not part of win %): per image, uniform U[0, 1) noise given the
same mass s (scaled down, or when its mass is below s its complement 1 − U is scaled down instead,
so that it stays in [0, 1]); seeded per image from (seed, image index).
Output: x = image index (x_label "image"); curves per series give per-image original_score,
explanation_score, drop_pct (NaN-free: 0 where M(I) ≤ 0 and the image is not counted),
increase (0/1) and, for the compared methods, win (share of the image's win); summary per series.
Reference:
    B. John, V. N. Balasubramanian, C. V. Jawahar. Canonical Saliency Maps: Decoding deep face
    models. IEEE TBIOM 2021. A. Chattopadhyay et al. Grad-CAM++. WACV 2018.
Touches: the model's forward passes only (through Scorer.stream); no global state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer, embed
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, check_int, check_request, chunk_size
from faceaudit.metrics.common import GameItem, GamePoint, GameResult, PointSink, check_items

GAME = "confidence"
RANDOM = "random"
MAX_CHUNK = 4096


@dataclass(frozen=True)
class ConfidenceOptions:
    """`seed` of the random baseline maps; `chunk`: images (with all their explanation images) per streamed chunk."""

    seed: int = 0
    chunk: int = 16

    def __post_init__(self) -> None:
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, MAX_CHUNK)


def confidence(
    model: PreparedModel, *, items: Sequence[GameItem], options: ConfidenceOptions = ConfidenceOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Average drop %, % increase in confidence and win % of every method whose maps the items carry."""
    if not isinstance(options, ConfidenceOptions):
        raise InvalidRequest("options", f"expected ConfidenceOptions, got {type(options).__name__}")
    items = check_items(items)
    methods = sorted(items[0].maps)
    faces, targets = _validated(model, items)
    for i, item in enumerate(items):  # refuse constant maps before any forward pass
        for name in methods:
            if np.ptp(item.maps[name]) == 0:  # check_items made every map float: 0 only when constant
                raise InvalidRequest(f"items[{i}].maps[{name}]", "the map is constant: eq. 8 cannot rescale it to [0, 1]")
    series = [*methods, RANDOM]
    n = len(items)
    original = np.zeros(n)
    explained = np.zeros((n, len(series)))  # M(E) per image and series
    per_image = len(series) + 1
    total = n * per_image + (n if targets[0].class_index is None else 0)
    done = [0]

    def count(passes: int) -> None:
        done[0] += passes
        if progress is not None:
            progress(done[0], total, GAME)

    step = chunk_size(options.chunk, faces[0], per_image)
    for scorer, indices, column in _groups(model, targets, step, count):
        chunks = (indices[start : start + step] for start in range(0, len(indices), step))
        batches = (np.concatenate([_explanation_stack(faces[i], items[i], methods, options.seed, i) for i in part])
                   for part in chunks)
        for start, scores in zip(range(0, len(indices), step), scorer.stream(batches), strict=True):
            part = indices[start : start + step]
            rows = scores.reshape(len(part) * per_image, -1)
            cols = [0 if rows.shape[1] == 1 else column[i] for i in part for _ in range(per_image)]
            values = rows[np.arange(len(rows)), cols].reshape(len(part), per_image)
            original[part], explained[part] = values[:, 0], values[:, 1:]
            count(len(rows))
            if on_point is not None:
                for i in part:
                    for point in _points(i, original[i], explained[i], series):
                        on_point(point)
    return _result(original, explained, series, options, done[0], model)


def rescale_to_mass(maps: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Eq. 8: each map min–max rescaled to [0, 1], then to the common mass s = min of their masses.

    Returns the maps H_m (float64, in [0, 1], each summing to s) and s.
    """
    unit = [(h - h.min()) / np.ptp(h) for h in (np.asarray(m, np.float64) for m in maps)]
    masses = [float(u.sum()) for u in unit]
    mass = min(masses)
    return [u * (mass / m) for u, m in zip(unit, masses)], mass


def random_map(shape: tuple[int, int], mass: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise in [0, 1] with total `mass`: U scaled down, or 1 − (1 − U) scaled down if ΣU < mass."""
    noise = rng.random(shape)
    total = float(noise.sum())
    if mass <= total:
        return noise * (mass / total)
    room = noise.size - total  # Σ(1 − U)
    return 1.0 - (1.0 - noise) * ((noise.size - mass) / room)


def _explanation_stack(face: np.ndarray, item: GameItem, methods: list[str], seed: int, index: int) -> np.ndarray:
    """(1 + M + 1, H, W, 3): the image, then its negative explanation image per method and for random."""
    heat, mass = rescale_to_mass([item.maps[name] for name in methods])
    heat.append(random_map(face.shape[:2], mass, np.random.default_rng([seed, index])))
    keep = 1.0 - np.stack(heat).astype(np.float32)
    return np.concatenate([face[None], keep[..., None] * face[None]])


def _validated(model: PreparedModel, items: list[GameItem]) -> tuple[list[np.ndarray], list[ExplainTarget]]:
    """Every item's image and target checked against the model, errors naming the item."""
    faces, targets = [], []
    for i, item in enumerate(items):
        try:
            face, target = check_request(model, item.image, item.target)
        except InvalidRequest as exc:
            raise InvalidRequest(f"items[{i}].{exc.field}", str(exc).split(": ", 1)[-1]) from exc
        faces.append(face)
        targets.append(target)
    return faces, targets


def _groups(
    model: PreparedModel, targets: list[ExplainTarget], step: int, count: Callable[[int], None],
) -> Iterator[tuple[Scorer, list[int], dict[int, int]]]:
    """(scorer, item indices, score column per item): one scorer per class, or per chunk of embedding items.

    An embedding chunk's scorer has the chunk's mates as references (cosines to all of them, R ≤
    `step`: linear, not quadratic, in the number of items); item i reads its mate's column.
    """
    if targets[0].class_index is not None:
        by_class: dict[int, list[int]] = {}
        for i, target in enumerate(targets):
            by_class.setdefault(int(target.class_index), []).append(i)
        for k, indices in sorted(by_class.items()):
            yield Scorer(model, ClassTarget(k)), indices, {}
        return
    for start in range(0, len(targets), step):
        indices = list(range(start, min(start + step, len(targets))))
        mates = embed(model, np.stack([targets[i].mate for i in indices]))
        count(len(indices))
        yield Scorer(model, EmbeddingTarget(mates)), indices, {i: j for j, i in enumerate(indices)}


def _drop_pct(original: float, explained: float) -> float:
    return 100.0 * max(0.0, original - explained) / original if original > 0 else 0.0


def _wins(scores: np.ndarray) -> np.ndarray:
    """One image's win split equally among the methods with the lowest explanation-image score."""
    lowest = scores == scores.min()
    return lowest / lowest.sum()


def _points(index: int, original: float, explained: np.ndarray, series: list[str]) -> Iterator[GamePoint]:
    wins = _wins(explained[:-1])
    for j, name in enumerate(series):
        values = {"original_score": float(original), "explanation_score": float(explained[j]),
                  "drop_pct": _drop_pct(original, explained[j]), "increase": float(explained[j] > original)}
        if name != RANDOM:
            values["win"] = float(wins[j])
        yield GamePoint(GAME, name, index, float(index), values)


def _result(original: np.ndarray, explained: np.ndarray, series: list[str], options: ConfidenceOptions,
            passes: int, model: PreparedModel) -> GameResult:
    n = len(original)
    positive = original > 0
    wins = np.stack([_wins(row[:-1]) for row in explained])
    curves: dict[str, dict[str, list[float]]] = {}
    summary: dict[str, dict[str, float]] = {}
    for j, name in enumerate(series):
        drops = np.array([_drop_pct(o, e) for o, e in zip(original, explained[:, j])])
        increase = (explained[:, j] > original).astype(float)
        curves[name] = {"original_score": original.tolist(), "explanation_score": explained[:, j].tolist(),
                        "drop_pct": drops.tolist(), "increase": increase.tolist()}
        summary[name] = {"increase_pct": 100.0 * float(increase.mean()), "drop_images": float(positive.sum()),
                         "mean_explanation_score": float(explained[:, j].mean())}
        if positive.any():
            summary[name]["average_drop_pct"] = float(drops[positive].mean())
        if name != RANDOM:
            curves[name]["win"] = wins[:, j].tolist()
            summary[name]["win_pct"] = 100.0 * float(wins[:, j].mean())
    notes = [
        "sign convention: average_drop_pct = 100·mean(max(0, M(I) − M(E))/M(I)), higher is better; "
        "increase_pct = % of images with M(E) > M(I), lower is better; win_pct = % of images where the "
        "method's E has the lowest score, higher is better (sums to 100 over the compared methods)",
        "E = (1 − H) ⊙ I with H the map rescaled to [0, 1] and to the mass s = min over the compared "
        "methods' rescaled masses (eq. 8; every H stays in [0, 1])",
        "win ties (equal lowest scores) are split equally among the tied methods",
        f"series '{RANDOM}' is a uniform-noise map of the same mass, a baseline outside win %",
        "eq. 9 as printed is garbled; the drop is Grad-CAM++'s max(0, Y − O)/Y",
    ]
    if len(series) == 2:
        notes.append("only one method is compared: its win % is 100 by definition")
    if (~positive).any():
        notes.append(f"{int((~positive).sum())} of {n} images have an original score ≤ 0 and are left out of "
                     "average_drop_pct (no relative drop); drop_images counts the rest")
    spec = model.spec
    if spec.kind == "classifier" and not spec.softmax and spec.output_type != "probabilities":
        notes.append("scores are the raw outputs (logits): a relative drop of a logit depends on its offset; "
                     "set softmax in the spec to measure class probabilities as the paper does")
    return GameResult(game=GAME, x_label="image", x=[float(i) for i in range(n)], curves=curves, summary=summary,
                      options=dataclasses.asdict(options), forward_passes=passes, notes=notes)
