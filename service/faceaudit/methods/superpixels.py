"""Superpixels for the coalition methods (LIME, KernelSHAP): segmenting a face and rendering coalitions.

A coalition z ∈ {0, 1}^M keeps the superpixels with z_m = 1 and replaces the others with the fill
image (faceaudit.engine.fills). Segmentations:
- slic: scikit-image's SLIC (Achanta et al. 2012) on the RGB image, `segments` clusters wanted,
  `compactness` trading colour for space; labels made consecutive.
- quickshift: scikit-image's quickshift with LIME's parameters (kernel_size=4, max_dist=200,
  ratio=0.2: lime_image.LimeImageExplainer's default segmentation); `segments` is ignored.
- grid: a regular ⌈√segments⌉ × ⌈√segments⌉ grid: image-independent, for reproducing ablations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import (
    ExplainTarget, Progress, check_int, check_passes, chunk_size, contrast, scoring_target,
)

SEGMENTATIONS = ("slic", "quickshift", "grid")
MAX_SEGMENTS = 1024


@dataclass(frozen=True)
class CoalitionOptions(FillOptions):
    """What LIME and KernelSHAP share: coalitions to score, superpixels, fill, seed, images per chunk."""

    samples: int = 1000
    segmentation: str = "slic"
    segments: int = 50
    compactness: float = 10.0
    fill: str = "mean"
    seed: int = 0
    chunk: int = 64

    def __post_init__(self) -> None:
        check_int("samples", self.samples, 2)
        check_passes("samples", self.samples + 2)
        check_segmentation(self.segmentation, self.segments, self.compactness)
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, 4096)
        super().__post_init__()


def check_segmentation(segmentation: str, segments: int, compactness: float) -> None:
    """Validate the segmentation options of an options class, naming the option at fault."""
    if segmentation not in SEGMENTATIONS:
        raise InvalidRequest("segmentation", f"{segmentation!r} is not one of {', '.join(SEGMENTATIONS)}")
    check_int("segments", segments, 2, MAX_SEGMENTS)
    if not (isinstance(compactness, (int, float)) and 0 < compactness <= 1000):
        raise InvalidRequest("compactness", f"{compactness!r} must be a number in (0, 1000]")


def segment(image: np.ndarray, segmentation: str, segments: int, compactness: float) -> np.ndarray:
    """(H, W) int labels 0..M−1 of the image's superpixels; at least two, or InvalidRequest."""
    height, width = image.shape[:2]
    if segmentation == "grid":
        side = int(np.ceil(np.sqrt(segments)))
        rows = np.minimum(np.arange(height) * side // height, side - 1)
        cols = np.minimum(np.arange(width) * side // width, side - 1)
        labels = rows[:, None] * side + cols[None, :]
    else:
        from skimage.segmentation import quickshift, slic  # imported here: only these methods need it

        unit = np.asarray(image, dtype=np.float64) / 255.0
        if segmentation == "slic":
            labels = slic(unit, n_segments=segments, compactness=compactness, start_label=0, channel_axis=-1)
        else:
            labels = quickshift(unit, kernel_size=4, max_dist=200, ratio=0.2)
    labels = np.unique(labels, return_inverse=True)[1].reshape(height, width)
    if labels.max() < 1:
        raise InvalidRequest("segmentation", f"{segmentation} found one superpixel in this image; use "
                                             "segmentation=grid or more segments")
    return labels


def coalition_images(image: np.ndarray, fill: np.ndarray, labels: np.ndarray, coalitions: np.ndarray,
                     chunk: int) -> Iterator[np.ndarray]:
    """The images of coalitions (n, M) in bounded chunks: superpixel m kept where z_m = 1, else filled."""
    step = chunk_size(chunk, image)
    for start in range(0, len(coalitions), step):
        keep = coalitions[start : start + step][:, labels][..., None]  # (b, H, W, 1) bool
        yield np.where(keep, image, fill).astype(np.float32)


def score_coalitions(model: PreparedModel, image: np.ndarray, target: ExplainTarget, labels: np.ndarray,
                     coalitions: np.ndarray, options: CoalitionOptions, progress: Progress | None, phase: str
                     ) -> tuple[np.ndarray, Scorer]:
    """f(z) (n,) float64 for every coalition, scored in bounded chunks (mate minus non-mate for pairs)."""
    scorer = Scorer(model, scoring_target(model, target))
    scores, done = [], 0
    for chunk in scorer.stream(coalition_images(image, options.baseline(image), labels, coalitions, options.chunk)):
        scores.append(contrast(chunk))
        done += len(chunk)
        if progress is not None:
            progress(done, len(coalitions), phase)
    return np.concatenate(scores).astype(np.float64), scorer


def paint(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The (H, W) map giving each pixel its superpixel's value."""
    return np.asarray(values, dtype=np.float64)[labels]
