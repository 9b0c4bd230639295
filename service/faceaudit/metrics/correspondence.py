"""Correspondence score Δ_l: does occluding the same face part change a layer's features the same way across identities?

Math (Zhong & Deng 2019 §IV-A "Correspondence analysis", eq. 1, after Zeiler & Fergus 2014 §5.2):
    ε_i^l = f_l(x_i) − f_l(x̃_i)      features of image i without minus with the occlusion
    Δ_l = Σ_{i≠j} H(sign(ε_i^l), sign(ε_j^l))
    over m images of different identities with the same part occluded in each; H is the Hamming
    distance. Lower Δ_l = the occlusion changes the layer in a more consistent way = tighter
    correspondence of that part across faces. The paper's Table I reports values in [0, 1] with a
    ± spread, so Δ_l here is eq. 1 normalised: the mean over pairs i ≠ j of the fraction of the D_l
    feature coordinates whose signs differ (eq. 1's sum / (m(m−1)·D_l)), with its standard
    deviation over the pairs; eq. 1's raw sum is reported as "hamming_sum". Compare each part with
    the "random" series: the same occlusion shapes at uniformly random positions, drawn
    independently per image (Zeiler & Fergus's "random object regions"); Δ_l(part) < Δ_l(random)
    means the layer establishes correspondence for that part.
    A coordinate that the occlusion leaves unchanged (|ε| ≤ tolerance × the layer's largest
    |feature| over the images: float rounding) has sign 0, as sign(0) = 0 in eq. 1.
Occlusion:
    region=box (the paper's and Zeiler & Fergus's squares): the bounding box of each image's part
    mask; region=mask: the mask's pixels. Occluded pixels take the fill (default mid-grey 127.5, the
    grey squares of Zeiler & Fergus Fig. 8; any faceaudit.engine.fills fill).
Defaults:
    pooling=flatten: the layer's feature vector itself, as in the paper: where a feature fires is
    what correspondence is about (global average pooling would discard it). random_trials=5 draws of
    random positions per part, seed 0.
Touches: the model (a session exposing the layers), nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import check_int
from faceaudit.metrics.common import GamePoint, GameResult, PointSink, Progress
from faceaudit.metrics.layer_features import (
    LayerFeatures, check_feature_bytes, check_images, check_layer_names, check_pooling, layer_features,
)

GAME = "correspondence"
RANDOM = "random"
REGIONS = ("box", "mask")
GREY = (127.5,)  # Zeiler & Fergus's grey occluders


@dataclass(frozen=True)
class CorrespondenceOptions(FillOptions):
    """Fill of the occluded pixels (FillOptions), layers, pooling, occlusion shape and random baseline."""

    fill: str = "constant"
    constant: tuple[float, ...] | None = GREY  # used by fill "constant" only; dropped when another fill is chosen
    layers: tuple[str, ...] = ()  # tensor names; empty = the stage outputs (layer_features.default_layers)
    pooling: str = "flatten"  # mean | max | flatten
    region: str = "box"  # box | mask
    random_trials: int = 5  # random placements of every part's occlusion
    tolerance: float = 1e-5  # |ε| at or below this × the layer's max |feature| counts as unchanged
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fill != "constant" and self.constant == GREY:
            object.__setattr__(self, "constant", None)  # the default grey, not asked for: FillOptions refuses it
        super().__post_init__()
        check_layer_names(self.layers)
        check_pooling(self.pooling)
        if self.region not in REGIONS:
            raise InvalidRequest("region", f"{self.region!r} is not one of {', '.join(REGIONS)}")
        check_int("random_trials", self.random_trials, 1, 1000)
        if not isinstance(self.tolerance, (int, float)) or not 0.0 <= self.tolerance < 1.0:
            raise InvalidRequest("tolerance", f"{self.tolerance!r} must be a number in [0, 1)")
        check_int("seed", self.seed, 0)


def correspondence(
    model: PreparedModel, *, images: Sequence[np.ndarray] | np.ndarray, parts: Mapping[str, Sequence[np.ndarray]],
    options: CorrespondenceOptions = CorrespondenceOptions(), on_point: PointSink | None = None,
    progress: Progress | None = None,
) -> GameResult:
    """Δ_l per layer for each occluded part and for random occlusions of the same shapes.

    images: m ≥ 2 model-sized RGB images (m, H, W, 3) in [0, 255], one per identity, frontal (the
    paper: 15 identities). parts: part name → m (H, W) boolean masks, mask i marking that part in
    image i (e.g. {"eyes": ..., "nose": ..., "mouth": ...} from faceaudit.demo Rendered.masks, or
    boxes around landmarks). Series: one per part plus "random"; x = layer index.
    """
    faces = check_images(images, model, "images", minimum=2)
    regions = _check_parts(parts, len(faces), faces[0].shape[:2], options.region)
    extractor = layer_features(model, options.layers)
    check_feature_bytes(2 * len(faces), extractor, options.pooling)
    total = len(faces) * (1 + len(regions) * (1 + options.random_trials))
    originals = extractor.run(faces, options.pooling, progress=progress, total=total)
    tolerances = [options.tolerance * float(np.abs(f).max(initial=0.0)) for f in originals]
    fills = [options.baseline(face) for face in faces]
    scorer = _Scorer(extractor, faces, fills, originals, tolerances, options.pooling, progress, total)
    curves: dict[str, dict[str, list[float]]] = {}
    random_pairs: list[list[np.ndarray]] = [[] for _ in extractor.layers]
    rng = np.random.default_rng(options.seed)
    dims = extractor.dims(options.pooling)
    for name, masks in regions.items():
        per_layer = scorer.pair_distances(masks)
        curves[name] = _curve(per_layer, len(faces), dims)
        _emit(on_point, name, curves[name])
        for _ in range(options.random_trials):
            moved = [_random_position(mask, rng) for mask in masks]
            for k, pairs in enumerate(scorer.pair_distances(moved)):
                random_pairs[k].append(pairs)
    curves[RANDOM] = _curve([np.concatenate(p) for p in random_pairs], len(faces), dims)
    _emit(on_point, RANDOM, curves[RANDOM])
    names = list(extractor.layers)
    return GameResult(
        game=GAME, x_label="layer index (names in options.layers)", x=[float(k) for k in range(len(names))],
        curves=curves, summary={series: dict(zip(names, c["delta"])) for series, c in curves.items()},
        options={**dataclasses.asdict(options), "layers": names}, forward_passes=scorer.done,
        notes=[f"delta: mean over the {len(faces) * (len(faces) - 1) // 2} image pairs of the fraction of "
               f"{options.pooling} feature signs that differ (eq. 1 / (m(m−1)·D)); lower = tighter correspondence",
               f"random: each part's {options.region} at uniformly random positions, independently per image, "
               f"{options.random_trials} draw(s) per part, pairs pooled over parts and draws"],
    )


@dataclass
class _Scorer:
    """Runs occluded copies of the images and turns their feature changes into pairwise sign distances."""

    extractor: LayerFeatures
    faces: list[np.ndarray]
    fills: list[np.ndarray]
    originals: list[np.ndarray]
    tolerances: list[float]
    pooling: str
    progress: Progress | None
    total: int

    def __post_init__(self) -> None:
        self.done = len(self.faces)

    def pair_distances(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        """Per layer, the normalised Hamming distance of sign(ε) for every unordered pair i < j."""
        occluded = np.stack([np.where(m[..., None], fill, face) for face, fill, m in zip(self.faces, self.fills, masks)])
        features = self.extractor.run(occluded, self.pooling, progress=self.progress, done=self.done, total=self.total)
        self.done += len(occluded)
        return [sign_distances(orig - occ, tol) for orig, occ, tol in zip(self.originals, features, self.tolerances)]


def sign_distances(differences: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Fraction of coordinates where sign(ε_i) ≠ sign(ε_j), for each pair i < j of rows of (m, D) ε.

    |ε| ≤ tolerance counts as 0. H = D − Σ_v [sign = v]·[sign = v]ᵀ over v ∈ {−1, 0, 1}.
    """
    signs = np.where(np.abs(differences) <= tolerance, 0, np.sign(differences)).astype(np.int8)
    m, d = signs.shape
    dtype = np.float32 if d < 2**24 else np.float64  # float32 counts exactly up to 2**24
    agree = np.zeros((m, m), np.float64)
    for value in (-1, 0, 1):
        indicator = (signs == value).astype(dtype)
        agree += indicator @ indicator.T
    upper = np.triu_indices(m, k=1)
    return (d - agree[upper]) / max(d, 1)


def _curve(per_layer: list[np.ndarray], m: int, dims: list[int]) -> dict[str, list[float]]:
    """delta (mean over pairs), delta_std, and eq. 1's raw sum over ordered pairs, m(m−1)·D·delta
    (for the random series: its mean over draws)."""
    deltas = [float(p.mean()) for p in per_layer]
    return {"delta": deltas, "delta_std": [float(p.std()) for p in per_layer],
            "hamming_sum": [m * (m - 1) * d * delta for d, delta in zip(dims, deltas)]}


def _emit(on_point: PointSink | None, series: str, curve: dict[str, list[float]]) -> None:
    if on_point is None:
        return
    for k, (delta, std) in enumerate(zip(curve["delta"], curve["delta_std"])):
        on_point(GamePoint(GAME, series, k, float(k), {"delta": delta, "delta_std": std}))


def _random_position(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`mask` moved so that its bounding box sits at a uniformly random position inside the image."""
    rows, cols = np.nonzero(mask)
    top, left = rows.min(), cols.min()
    h, w = rows.max() - top + 1, cols.max() - left + 1
    new_top = int(rng.integers(0, mask.shape[0] - h + 1))
    new_left = int(rng.integers(0, mask.shape[1] - w + 1))
    moved = np.zeros_like(mask)
    moved[new_top : new_top + h, new_left : new_left + w] = mask[top : top + h, left : left + w]
    return moved


def _check_parts(parts: object, count: int, shape: tuple[int, int], region: str) -> dict[str, list[np.ndarray]]:
    """Part name → per-image bool occlusion regions (the masks, or their bounding boxes), in name order: the
    random baseline draws part by part, so the result does not depend on the order the caller listed them."""
    if not isinstance(parts, Mapping) or not parts:
        raise InvalidRequest("parts", "expected at least one part: a name → one (H, W) mask per image")
    regions: dict[str, list[np.ndarray]] = {}
    for name in sorted(parts, key=str):
        masks = parts[name]
        field = f"parts[{name}]"
        if not isinstance(name, str) or not name or name == RANDOM:
            raise InvalidRequest("parts", f"part names must be non-empty text other than {RANDOM!r}, got {name!r}")
        if not isinstance(masks, (Sequence, np.ndarray)) or len(masks) != count:
            raise InvalidRequest(field, f"expected one mask per image ({count}), got {type(masks).__name__} "
                                        f"of length {len(masks) if hasattr(masks, '__len__') else 'none'}")
        regions[name] = []
        for i, raw in enumerate(masks):
            mask = np.asarray(raw)
            if mask.shape != shape or not (mask.dtype == bool or np.isin(mask, (0, 1)).all()):
                raise InvalidRequest(f"{field}[{i}]", f"expected a {shape} boolean mask, got {mask.dtype} {mask.shape}")
            mask = mask.astype(bool)
            if not mask.any():
                raise InvalidRequest(f"{field}[{i}]", "the mask is empty: nothing to occlude")
            if region == "box":
                rows, cols = np.nonzero(mask)
                mask = np.zeros(shape, bool)
                mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
            regions[name].append(mask)
    return regions
