"""Invariance curves: how far each layer's features move when the face is translated, rotated or scaled.

Math (Zhong & Deng 2019 §IV-A "Feature invariance", Fig. 4, after Zeiler & Fergus 2014 Fig. 5):
    d_l(T, m) = mean over images x of 1 − cos(f_l(x), f_l(T_m(x)))
    for each layer l, transform T (vertical translation, rotation, scale) and magnitude m, with
    f_l the layer's features (faceaudit.metrics.layer_features); the standard deviation over images
    is reported beside it. Cosine distance as in the paper ("in face verification, we usually use
    cosine distance"); Zeiler & Fergus used Euclidean distance.
Transforms (pixel space, about the image centre, bilinear, on the model-sized RGB image):
    translation: m × image height pixels, down for m > 0 (the paper's vertical translation;
    translation_axis=horizontal shifts right instead); rotation: m degrees counter-clockwise on
    screen; scale: zoom by the factor m (m > 1 enlarges). Pixels the transform brings in from outside
    the image are filled by `border`: nearest (edge pixels repeated), reflect, wrap (circular), or
    constant (`border_value`). The identity magnitude (0, 0°, 1) gives distance 0 exactly.
Defaults:
    pooling=flatten: the layer's whole feature vector, as the paper (and Zeiler & Fergus) compare it;
    global average pooling would make every convolutional layer nearly translation invariant by
    construction. Magnitudes span the paper's (Zeiler & Fergus's) ranges: translations ±0.25 of the
    height (±60 px of 224), rotations 0–360° in 30° steps, scales 0.6–1.8.
Result:
    One series per transform; curves[transform] holds "magnitude" and, per layer name, the mean
    distance and "<layer>:std" along it (each transform has its own magnitudes, so GameResult.x is
    empty). summary[transform][layer] = the mean distance over the magnitudes. One point streams per
    (transform, magnitude) once every image has been run for that transform.
Limits: at most MAX_MAGNITUDES magnitudes per transform; the originals and every transformed copy
    count against methods.common.MAX_FORWARD_PASSES. Copies are made and run one chunk at a time
    (methods.common.chunk_size) and the distances kept as running moments, not per image.
Touches: the model (a session exposing the layers), nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import affine_transform

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import check_passes, chunk_size
from faceaudit.metrics.common import GamePoint, GameResult, PointSink, Progress
from faceaudit.metrics.layer_features import (
    check_feature_bytes, check_images, check_layer_names, check_pooling, cosine_similarity, layer_features,
)

GAME = "invariance"
TRANSFORMS = ("translation", "rotation", "scale")
BORDERS = {"nearest": "nearest", "reflect": "reflect", "wrap": "grid-wrap", "constant": "constant"}
AXES = ("vertical", "horizontal")
IDENTITY = {"translation": 0.0, "rotation": 0.0, "scale": 1.0}
MAX_MAGNITUDES = 1000  # per transform: a half-degree rotation sweep over a full turn fits


@dataclass(frozen=True)
class InvarianceOptions:
    """Layers, pooling, and the transforms with their magnitudes."""

    layers: tuple[str, ...] = ()  # tensor names; empty = the stage outputs (layer_features.default_layers)
    pooling: str = "flatten"  # mean | max | flatten
    transforms: tuple[str, ...] = TRANSFORMS
    translations: tuple[float, ...] = (-0.25, -0.2, -0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2, 0.25)  # × height
    rotations_deg: tuple[float, ...] = (0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0,
                                        330.0, 360.0)  # counter-clockwise
    scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8)
    translation_axis: str = "vertical"
    border: str = "nearest"  # nearest | reflect | wrap | constant
    border_value: float = 0.0  # grey level in [0, 255] for border "constant"

    def __post_init__(self) -> None:
        check_layer_names(self.layers)
        check_pooling(self.pooling)
        if (not isinstance(self.transforms, tuple) or not self.transforms or len(set(self.transforms)) != len(self.transforms)
                or any(t not in TRANSFORMS for t in self.transforms)):
            raise InvalidRequest("transforms", f"{self.transforms!r} must be distinct names among {', '.join(TRANSFORMS)}")
        _check_magnitudes("translations", self.translations, -1.0, 1.0)
        _check_magnitudes("rotations_deg", self.rotations_deg, -3600.0, 3600.0)
        _check_magnitudes("scales", self.scales, 0.05, 20.0)
        if self.translation_axis not in AXES:
            raise InvalidRequest("translation_axis", f"{self.translation_axis!r} is not one of {', '.join(AXES)}")
        if self.border not in BORDERS:
            raise InvalidRequest("border", f"{self.border!r} is not one of {', '.join(BORDERS)}")
        if not isinstance(self.border_value, (int, float)) or not 0.0 <= self.border_value <= 255.0:
            raise InvalidRequest("border_value", f"{self.border_value!r} must be a grey level in [0, 255]")

    def magnitudes(self, transform: str) -> tuple[float, ...]:
        return {"translation": self.translations, "rotation": self.rotations_deg, "scale": self.scales}[transform]


def _check_magnitudes(name: str, values: tuple[float, ...], low: float, high: float) -> None:
    if isinstance(values, tuple) and len(values) > MAX_MAGNITUDES:
        raise InvalidRequest(name, f"{len(values):,} magnitudes; at most {MAX_MAGNITUDES:,} per transform")
    if (not isinstance(values, tuple) or not values
            or not all(isinstance(v, (int, float)) and math.isfinite(v) and low <= v <= high for v in values)):
        raise InvalidRequest(name, f"{values!r} must be a non-empty tuple of numbers in [{low:g}, {high:g}]")


def invariance(
    model: PreparedModel, *, images: Sequence[np.ndarray] | np.ndarray,
    options: InvarianceOptions = InvarianceOptions(), on_point: PointSink | None = None,
    progress: Progress | None = None,
) -> GameResult:
    """Cosine distance of each layer's features between each image and its transformed versions.

    images: model-sized RGB images (N, H, W, 3) in [0, 255] (an array or a sequence of (H, W, 3)),
    frontal faces for the paper's reading. Distances are averaged over the images.
    """
    faces = check_images(images, model, "images")
    # Every transformed copy is a forward pass: the originals and N × Σ magnitudes copies.
    total = len(faces) * (1 + sum(len(options.magnitudes(t)) for t in options.transforms))
    check_passes("images", total)
    extractor = layer_features(model, options.layers)
    check_feature_bytes(len(faces), extractor, options.pooling)
    originals = extractor.run(faces, options.pooling, progress=progress, total=total)
    # Copies of (image, magnitude) pairs in row-major order, one runtime call's worth per chunk, within CHUNK_BYTES.
    most = len(faces) * max(len(options.magnitudes(t)) for t in options.transforms)
    buffer = np.empty((min(most, chunk_size(extractor.chunk, faces[0])), *faces[0].shape), np.float32)
    done = len(faces)
    curves: dict[str, dict[str, list[float]]] = {}
    summary: dict[str, dict[str, float]] = {}
    for transform in options.transforms:
        magnitudes = options.magnitudes(transform)
        moments = _Moments(len(extractor.layers), len(magnitudes))
        row = np.empty((len(extractor.layers), len(magnitudes)))  # the current image's distances
        pairs = len(faces) * len(magnitudes)
        for start in range(0, pairs, len(buffer)):
            index, magnitude = np.divmod(np.arange(start, min(start + len(buffer), pairs)), len(magnitudes))
            for b, (i, j) in enumerate(zip(index, magnitude)):
                buffer[b] = transformed(faces[i], transform, magnitudes[j], options)
            feats = extractor.run(buffer[: len(index)], options.pooling, progress=progress, done=done, total=total)
            done += len(index)
            distances = np.stack([1.0 - cosine_similarity(orig[index], moved) for orig, moved in zip(originals, feats)])
            for i in np.unique(index):  # a chunk may end one image's row and start the next
                mine = index == i
                row[:, magnitude[mine]] = distances[:, mine]
                if magnitude[mine][-1] == len(magnitudes) - 1:
                    moments.add(row)
        mean, std = moments.mean, moments.std()
        curve: dict[str, list[float]] = {"magnitude": [float(m) for m in magnitudes]}
        for k, name in enumerate(extractor.layers):
            curve[name], curve[f"{name}:std"] = mean[k].tolist(), std[k].tolist()
        curves[transform] = curve
        summary[transform] = {name: float(mean[k].mean()) for k, name in enumerate(extractor.layers)}
        if on_point is not None:
            for j, m in enumerate(magnitudes):
                on_point(GamePoint(GAME, transform, j, float(m), {n: float(mean[k, j]) for k, n in enumerate(extractor.layers)}))
    return GameResult(
        game=GAME, x_label="magnitude (translation: fraction of image height; rotation: degrees; scale: factor)",
        x=[], curves=curves, summary=summary,
        options={**dataclasses.asdict(options), "layers": list(extractor.layers)}, forward_passes=total,
        notes=[f"cosine distance 1 − cos of {options.pooling} features, mean over {len(faces)} images",
               "each transform has its own x: curves[transform]['magnitude']",
               f"{options.translation_axis} translation, positive = {'down' if options.translation_axis == 'vertical' else 'right'}; "
               f"rotation counter-clockwise; border {options.border}"],
    )


class _Moments:
    """Running mean and population standard deviation of (layers, magnitudes) rows, one row per image
    (Welford's update): memory stays that of one row whatever the number of images."""

    def __init__(self, layers: int, magnitudes: int) -> None:
        self.count = 0
        self.mean = np.zeros((layers, magnitudes))
        self._squares = np.zeros((layers, magnitudes))  # Σ (x − mean)², updated in place

    def add(self, row: np.ndarray) -> None:
        self.count += 1
        delta = row - self.mean
        self.mean += delta / self.count
        self._squares += delta * (row - self.mean)

    def std(self) -> np.ndarray:
        return np.sqrt(self._squares / self.count)  # each update adds δ·(x − new mean) ≥ 0


def transformed(image: np.ndarray, transform: str, magnitude: float, options: InvarianceOptions) -> np.ndarray:
    """`image` (H, W, 3) moved by `transform` of `magnitude` about its centre (see the module docstring)."""
    height, width = image.shape[:2]
    centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
    # affine_transform maps each output (row, col) to the input position matrix @ out + offset.
    if transform == "translation":
        matrix = np.eye(2)
        shift = magnitude * height
        offset = np.array([-shift, 0.0]) if options.translation_axis == "vertical" else np.array([0.0, -shift])
    elif transform == "rotation":
        # Counter-clockwise on screen (rows grow downwards): an output pixel reads the input rotated back.
        a = math.radians(magnitude)
        matrix = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        offset = centre - matrix @ centre
    else:
        matrix = np.eye(2) / magnitude
        offset = centre - matrix @ centre
    full = np.eye(3)
    full[:2, :2] = matrix
    out = affine_transform(image.astype(np.float32, copy=False), full, offset=np.append(offset, 0.0), order=1,
                           mode=BORDERS[options.border], cval=float(options.border_value))
    return np.clip(out, 0.0, 255.0)
