"""Per-layer verification accuracy: how discriminative each layer's features are (Zhong & Deng 2019, Table II).

Math:
    s_p = cos(f_l(a_p), f_l(b_p)) for every pair p = (a_p, b_p) and layer l (pooled features of
    faceaudit.metrics.layer_features). A pair is called genuine when s_p ≥ t. With `folds` = k > 1
    (the LFW protocol the paper tests on): pairs are split into k contiguous folds in the given
    order (LFW's pairs.txt lists its 10 folds in order), t is the threshold of highest accuracy on
    the other k − 1 folds, accuracy is measured on the held-out fold; the result is the mean over
    folds (and their standard deviation). With folds = 1: the best-threshold accuracy on all pairs
    (optimistic: the threshold is fitted on the pairs it is scored on).
    Candidate thresholds: the lowest training similarity (all genuine), the midpoints between
    consecutive distinct ones, and the next float above the highest (all impostor); ties are broken
    towards the lowest threshold. Also reported: the threshold-free ROC AUC of s
    over all pairs (ties count ½) and the best threshold on all pairs.
Reference:
    Zhong, Deng. Exploring features and attributes in deep face recognition using visualization
    techniques. FG 2019, §IV-A "Feature discrimination" (VGGFace pool1..fc7 on LFW and CPLFW).
Defaults:
    folds=10 (LFW's protocol); pooling=mean (global average pooling, the issue's "pooled features";
    the paper does not say how it reads pool1..pool5, use pooling=flatten for the raw maps).
Touches: the model (a session exposing the layers, faceaudit.metrics.layer_features, whose passes
go to an open off-session pass meter), nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import CHUNK_BYTES, check_int
from faceaudit.metrics.common import GamePoint, GameResult, PointSink, Progress
from faceaudit.metrics.layer_features import (
    check_feature_bytes, check_images, check_layer_names, check_pooling, cosine_similarity, layer_features,
)

GAME = "layer_verification"


@dataclass(frozen=True)
class LayerVerificationOptions:
    """Which layers, how their features are pooled, and how many cross-validation folds."""

    layers: tuple[str, ...] = ()  # tensor names; empty = the stage outputs (layer_features.default_layers)
    pooling: str = "mean"  # mean | max | flatten
    folds: int = 10  # 1 = best threshold on all pairs

    def __post_init__(self) -> None:
        check_layer_names(self.layers)
        check_pooling(self.pooling)
        check_int("folds", self.folds, 1, 100)


def layer_verification(
    model: PreparedModel, *, images: Sequence[np.ndarray] | np.ndarray, pairs: np.ndarray | Sequence[Sequence[int]],
    genuine: np.ndarray | Sequence[bool], options: LayerVerificationOptions = LayerVerificationOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Verification accuracy of each layer's pooled features on genuine/impostor pairs.

    images: model-sized RGB images (N, H, W, 3) in [0, 255] (an array or a sequence of (H, W, 3)).
    pairs: (P, 2) indices into images, one row per pair. genuine: (P,) bool, True for a same-identity
    pair; both kinds must occur. Points stream one per layer (series "verification", x = layer index).
    """
    faces = check_images(images, model, "images")
    index, same = _check_pairs(pairs, genuine, len(faces), options.folds)
    extractor = layer_features(model, options.layers)
    check_feature_bytes(len(faces), extractor, options.pooling)
    features = extractor.run(faces, options.pooling, progress=progress)
    folds = np.array_split(np.arange(len(same)), options.folds)
    curves: dict[str, list[float]] = {"accuracy": [], "accuracy_std": [], "auc": [], "threshold": []}
    summary: dict[str, dict[str, float]] = {}
    for k, (name, feats) in enumerate(zip(extractor.layers, features)):
        scores = pair_similarities(feats, index)
        threshold = best_threshold(scores, same)
        accuracies = [fold_accuracy(scores, same, held) for held in folds] if options.folds > 1 else \
            [_accuracy(scores, same, threshold)]
        values = {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
                  "auc": roc_auc(scores, same), "threshold": threshold}
        for key, value in values.items():
            curves[key].append(value)
        summary[name] = values
        if on_point is not None:
            on_point(GamePoint(GAME, "verification", k, float(k), values))
    best = int(np.argmax(curves["accuracy"]))
    summary["verification"] = {"best_layer": float(best), "best_accuracy": curves["accuracy"][best]}
    return GameResult(
        game=GAME, x_label="layer index (names in options.layers)", x=[float(k) for k in range(len(features))],
        curves={"verification": curves}, summary=summary,
        options={**dataclasses.asdict(options), "layers": list(extractor.layers)}, forward_passes=len(faces),
        notes=[f"pairs: {len(same)} ({int(same.sum())} genuine); similarity: cosine of {options.pooling}-pooled "
               "features; a pair is genuine when similarity ≥ threshold",
               f"accuracy: mean over {options.folds} contiguous folds, threshold fitted on the other folds"
               if options.folds > 1 else "accuracy: best threshold fitted on all pairs (optimistic)"],
    )


def pair_similarities(features: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Cosine per pair of rows of `features` (N, D), gathered a chunk of pairs at a time (bounded memory)."""
    step = max(1, CHUNK_BYTES // (8 * max(features.shape[1], 1)))
    return np.concatenate([cosine_similarity(features[index[i : i + step, 0]], features[index[i : i + step, 1]])
                           for i in range(0, len(index), step)])


def fold_accuracy(scores: np.ndarray, same: np.ndarray, held: np.ndarray) -> float:
    """Accuracy on the pairs `held` at the threshold fitted on all other pairs."""
    train = np.ones(len(scores), bool)
    train[held] = False
    return _accuracy(scores[held], same[held], best_threshold(scores[train], same[train]))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The lowest threshold of highest accuracy among the lowest score, the midpoints of distinct scores and
    the next float above the highest score (finite, so that results stay plain JSON)."""
    values = np.unique(scores)
    candidates = np.concatenate([values[:1], (values[:-1] + values[1:]) / 2, [np.nextafter(values[-1], np.inf)]])
    # Pairs at or above candidate c: those whose score is above every value below c.
    below = np.searchsorted(np.sort(scores[same]), candidates, side="left")  # genuine called impostor
    impostor_below = np.searchsorted(np.sort(scores[~same]), candidates, side="left")
    correct = (same.sum() - below) + impostor_below
    return float(candidates[int(np.argmax(correct))])


def _accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == same))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """P(score of a genuine pair > score of an impostor pair), ties counting ½ (Mann–Whitney U)."""
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # average 1-based rank of each tie group
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    return float((ranks[same].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _check_pairs(pairs: object, genuine: object, count: int, folds: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.asarray(pairs)
    if index.ndim != 2 or index.shape[1] != 2 or len(index) == 0 or not np.issubdtype(index.dtype, np.integer):
        raise InvalidRequest("pairs", f"expected (P, 2) integer image indices, got {index.dtype} {index.shape}")
    if index.min() < 0 or index.max() >= count:
        raise InvalidRequest("pairs", f"indices must lie in 0..{count - 1} (the images given)")
    same = np.asarray(genuine)
    if same.shape != (len(index),) or same.dtype != bool:
        raise InvalidRequest("genuine", f"expected ({len(index)},) bool, one per pair, got {same.dtype} {same.shape}")
    if same.all() or not same.any():
        raise InvalidRequest("genuine", "needs both genuine and impostor pairs")
    if folds > len(index):
        raise InvalidRequest("folds", f"{folds} folds need at least {folds} pairs, got {len(index)}")
    return index, same
