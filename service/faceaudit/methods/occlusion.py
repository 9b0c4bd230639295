"""Occlusion: how much the score drops when a square patch of the face is hidden.

Math (John et al. 2021, eq. 1, after Zeiler & Fergus 2014):
    S(x, y) = 1/|W(x, y)| · Σ_{w ∈ W(x, y)} [φ(I) − φ(I ⊙ (1 − B_w) + F ⊙ B_w)]
    B_w: window w's 0/1 mask; F: the fill image (faceaudit.engine.fills); W(x, y): the windows
    covering pixel (x, y). φ is the class score of a classifier (softmax if the spec asks for it),
    and for an embedding model the cosine of the probe's embedding to the mate's ("pair
    occlusion"). With a non-mate φ = cos(·, mate) − cos(·, non-mate): since S is linear in φ, that
    is the contrastive map, map against the mate minus map against the non-mate.
Windows:
    square, side `patch`, starts 0, s, 2s, …, ⌈(size − patch)/s⌉·s in each direction, the last one
    clipped at the border; stride ≤ patch, so every pixel is covered at least once.
Reference:
    John, Balasubramanian, Jawahar. Canonical Saliency Maps: decoding deep face models. IEEE TBIOM 2021.
    Zeiler, Fergus. Visualizing and understanding convolutional networks. ECCV 2014.
Defaults:
    patch=15 (John et al. §5.5: "a patch of size 15 × 15"); stride=4 (issue 3: the paper gives none
    for plain occlusion maps); fill=zero (eq. 1 multiplies by the 0/1 mask: occluded pixels become
    0); blur_sigma=5.0 and dataset_mean (VGGFace) as faceaudit.engine.fills; chunk=64 windows per
    streamed chunk (engineering: 64·H·W·3 float32, 9.6 MB at 112×112).
captum (checked against captum/attr/_core/occlusion.py and feature_ablation.py, read, not run):
    Occlusion(f).attribute(x, sliding_window_shapes=(C, patch, patch), strides=(C, stride, stride),
    baselines=b, target=k), with x the model input (1, C, H, W) (NHWC: (patch, patch, C) and
    (stride, stride, C)), f the model (plus the cosine head above for embedding models) and b the
    fill in model space, to_model_input(F): a tensor for the mean/blur fills, a scalar only for a
    grey colour under a channel-independent spec (fill=zero under the assumed spec, x = pixel/255,
    is captum's default baseline 0). captum takes ⌈(dim − window)/stride⌉ + 1 shifts
    per dimension (our starts), crops the last window at the border (negative padding), and returns
    Σ_w (f(x) − f(x_w)) · B_w / Σ_w B_w per input element. The window spans all C channels, so
    every channel of a pixel gets the same value, which is S: S = captum's attribution summed over
    channels and divided by C (3 for RGB). This is exact because preprocessing is affine per pixel
    and channel, so it commutes with the blend: to_model_input(I ⊙ (1 − B) + F ⊙ B) = x ⊙ (1 − B) +
    b ⊙ B (greyscale models: luma is linear too, with C = 1). Differences: captum checks with
    asserts (vanish under -O) and requires stride ≤ window only where the window is smaller than the
    dimension (we always require it); it scores x in a separate forward call, we in the same stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import (
    ExplainTarget, Progress, Run, check_int, check_passes, check_request, chunk_size, contrast, scoring_target,
)
from faceaudit.methods.saliency_map import SaliencyMap

Box = tuple[int, int, int, int]  # (top, bottom, left, right) of a window; bottom and right exclusive
# drop(original, occluded): scores of the k unoccluded faces (k, ...) and of n windows' occluded
# faces (n, k, ...) -> the n windows' values (n,).
Drop = Callable[[np.ndarray, np.ndarray], np.ndarray]
MAX_CHUNK = 4096


@dataclass(frozen=True)
class OcclusionOptions(FillOptions):
    """Patch side and stride in px; fill of occluded pixels (FillOptions); windows per chunk."""

    patch: int = 15
    stride: int = 4
    chunk: int = 64

    def __post_init__(self) -> None:
        check_int("patch", self.patch, 1)
        check_int("stride", self.stride, 1, self.patch, " (at most the patch side, so that windows cover every pixel)")
        super().__post_init__()
        check_int("chunk", self.chunk, 1, MAX_CHUNK)


def occlusion(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: OcclusionOptions = OcclusionOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Occlusion map of `image` for a class, or pair occlusion against a mate (and non-mate)."""
    run = Run("occlusion", model, target, options)
    image, target = check_request(model, image, target)
    scorer = Scorer(model, scoring_target(model, target))
    values, count = occlude(scorer, [image], options, drop=score_drop, progress=progress, phase="occlusion")
    return run.result(values, scorer.stats, extra={"windows": count})


def score_drop(original: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """φ(I) − φ(I_w) for one face, φ the scorer's score (mate minus non-mate when there are two)."""
    return contrast(original) - contrast(occluded[:, 0])


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """0, stride, …, ⌈(size − patch)/stride⌉·stride: the last window reaches the border."""
    last = -(-(size - patch) // stride) * stride
    return list(range(0, last + 1, stride))


def windows(height: int, width: int, patch: int, stride: int, copies: int = 1) -> list[Box]:
    """Every window (row by row) clipped to the image; with 1 ≤ stride ≤ patch they cover every pixel.

    `copies` faces are scored per window: the forward-pass limit is checked before any list is built.
    """
    if patch > min(height, width):
        raise InvalidRequest("patch", f"{patch} px is larger than the {height}×{width} image")
    count = (-(-(height - patch) // stride) + 1) * (-(-(width - patch) // stride) + 1)
    check_passes("stride", copies * (count + 1))
    return [
        (top, min(top + patch, height), left, min(left + patch, width))
        for top in window_starts(height, patch, stride)
        for left in window_starts(width, patch, stride)
    ]


class WindowMean:
    """Per pixel, the mean value of the windows covering it (running sum and count)."""

    def __init__(self, height: int, width: int) -> None:
        self._total = np.zeros((height, width))
        self._count = np.zeros((height, width))

    def add(self, boxes: Sequence[Box], values: np.ndarray) -> None:
        for (top, bottom, left, right), value in zip(boxes, values, strict=True):
            self._total[top:bottom, left:right] += value
            self._count[top:bottom, left:right] += 1

    def mean(self) -> np.ndarray:
        return (self._total / self._count).astype(np.float32)


def occlude(
    scorer: Scorer, faces: Sequence[np.ndarray], options: OcclusionOptions, *, drop: Drop,
    progress: Progress | None, phase: str,
) -> tuple[np.ndarray, int]:
    """Occlude all k faces at the same window, for every window; the window-averaged map and the window count.

    Each face is filled from its own baseline. Everything goes through one `scorer.stream`, the
    unoccluded faces first so that they take the same batch path as the perturbations.
    """
    stacked = np.stack([np.asarray(face, dtype=np.float32) for face in faces])
    fills = np.stack([options.baseline(face) for face in stacked])
    if np.array_equal(fills[0], stacked[0]):
        raise InvalidRequest("fill", f"the {options.fill!r} fill equals the image: occluding it changes nothing")
    boxes = windows(stacked.shape[1], stacked.shape[2], options.patch, options.stride, len(stacked))
    average = WindowMean(stacked.shape[1], stacked.shape[2])
    k, total = len(stacked), len(stacked) * (len(boxes) + 1)
    chunk = chunk_size(options.chunk, stacked[0], k)
    scores = scorer.stream(_perturbations(stacked, fills, boxes, chunk))
    original = next(scores)
    for start, part_scores in zip(range(0, len(boxes), chunk), scores, strict=True):
        part = boxes[start : start + chunk]
        average.add(part, drop(original, part_scores.reshape(len(part), k, *part_scores.shape[1:])))
        if progress is not None:
            progress(k * (start + len(part) + 1), total, phase)
    return average.mean(), len(boxes)


def _perturbations(faces: np.ndarray, fills: np.ndarray, boxes: list[Box], chunk: int) -> Iterator[np.ndarray]:
    """The unoccluded faces (k, H, W, 3), then per chunk of n windows (n·k, H, W, 3), window-major.

    One chunk buffer is reused, restoring only the last chunk's windows: Scorer.stream copies each
    chunk into its batch buffers before it asks for the next one (one chunk alive at a time).
    """
    yield faces
    buffer = np.repeat(faces[None], min(chunk, len(boxes)), axis=0)
    previous: list[Box] = []
    for start in range(0, len(boxes), chunk):
        part = boxes[start : start + chunk]
        for i, (top, bottom, left, right) in enumerate(previous):
            buffer[i, :, top:bottom, left:right] = faces[:, top:bottom, left:right]
        for i, (top, bottom, left, right) in enumerate(part):
            buffer[i, :, top:bottom, left:right] = fills[:, top:bottom, left:right]
        previous = part
        yield buffer[: len(part)].reshape(-1, *faces.shape[1:])
