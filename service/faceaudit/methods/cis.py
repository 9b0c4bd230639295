"""CIS: Canonical Image Saliency, occlusion drops recorded on a canonical face.

Math (John et al., §3 and Algorithm 1), for correspondence points M_I[n] (input) ↔ M_F[n] (canonical):
    S_n = φ(I, c) − φ(I*_n, c)                                   (eq. 1)
    P*  = Σ_n S_n · 1[Q(M_F[n], sz·s)]                           (eq. 4)
    N   = Σ_n 1[Q(M_F[n], sz·s)]
    P   = P* ⊘ N,  P = 0 where N = 0                             (eq. 5; Algorithm 1, lines 12-14)
where I*_n is I with the pixels of Q(M_I[n], sz) replaced by the fill, Q(p, a) the pixels whose
centres c satisfy |c − p| < a/2 on both axes (eq. 2), and s the canonical/input scale
(Algorithm 1, line 4: f_sz = sz · H_F / H_I; see `Correspondence.scale`). φ is the class score,
or for embedding models the cosine to the mate, minus the cosine to the non-mate if one is given
(the contrastive map: S against the mate minus S against the non-mate, as S is linear in φ).
Reference:
    T. A. John, V. N. Balasubramanian, C. V. Jawahar. Canonical Saliency Maps: Decoding Deep Face
    Models. IEEE T-BIOM, 2021.
Differences: the paper's correspondence is a 3D morphable model fit (PRNet) and its stride skips
mesh vertices; here the correspondence comes from an aligner (`faceaudit.alignment`) and the stride
spaces canonical grid points. Positions are rounded to 1e-6 px before windows are cut, so float
noise of the warp cannot move a window edge.
Defaults:
    patch=15 px (§5.5: "We used a patch of size 15 × 15"); fill=zero (Algorithm 1, line 7 sets
    the patch to 0); stride=4 canonical px (the paper leaves the stride tunable, §5.5, and gives no
    value; 4 is faceaudit's occlusion stride); chunk=32 occluded images per scorer chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.alignment.correspondence import Correspondence, PreAligned, Shape
from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import (
    ExplainTarget, Progress, Run, check_int, check_passes, check_request, chunk_size, contrast, scoring_target,
)
from faceaudit.methods.saliency_map import SaliencyMap

_DECIMALS = 6  # positions and sides are rounded to 1e-6 px before windows are cut


@dataclass(frozen=True)
class CisOptions(FillOptions):
    """CIS parameters (defaults and their sources: module docstring); fills as FillOptions."""

    patch: int = 15  # sz: side of the occluding square in input px
    stride: int = 4  # canonical px between correspondence points
    chunk: int = 32  # occluded images per chunk streamed to the scorer

    def __post_init__(self) -> None:
        for name in ("patch", "stride", "chunk"):
            check_int(name, getattr(self, name), 1, 4096)
        super().__post_init__()


def cis(model: PreparedModel, *, image: np.ndarray, target: ExplainTarget, options: CisOptions = CisOptions(),
        progress: Progress | None = None, correspondence: Correspondence | None = None) -> SaliencyMap:
    """The CIS map of one face on the canonical frame (default: the input frame itself, `PreAligned`)."""
    image, target = check_request(model, image, target)
    run = Run("cis", model, target, options)
    if correspondence is None:
        correspondence = PreAligned(image.shape[:2]).correspond(image)
    _check_correspondence(correspondence, image, options)
    input_xy, canonical_xy = correspondence.points(options.stride)
    check_passes("stride", len(input_xy) + 1)
    if not len(input_xy):
        raise _no_points(correspondence, options.stride)
    canonical_patch = options.patch * correspondence.scale
    occluded = square_windows(input_xy, options.patch, image.shape[:2])
    recorded = square_windows(canonical_xy, canonical_patch, correspondence.canonical_shape)
    scorer = Scorer(model, scoring_target(model, target))
    baseline = options.baseline(image)
    if np.array_equal(baseline, image):
        raise InvalidRequest("fill", f"the {options.fill!r} fill equals the image: occluding it changes nothing")
    drops = _drops(scorer, image, baseline, occluded, chunk_size(options.chunk, image), progress)
    values = density_normalised(drops, recorded, correspondence.canonical_shape)
    extra = {"points": len(drops), "canonical_scale": correspondence.scale, "canonical_patch": canonical_patch,
             "input_shape": list(image.shape[:2])}
    return run.result(values, scorer.stats, frame="canonical", extra=extra)


def square_windows(xy: np.ndarray, side: float, shape: Shape) -> np.ndarray:
    """Windows (K, 4) [row0, row1, col0, col1), half-open, of the squares Q(p, side) (eq. 2): the
    pixels whose centres c satisfy |c − p| < side/2 on both axes, clipped to a frame of `shape`."""
    centre = np.round(np.asarray(xy, dtype=np.float64), _DECIMALS)[:, ::-1]  # (row, col)
    half = round(side / 2.0, _DECIMALS)
    low = np.floor(centre - half).astype(np.int64) + 1
    high = np.ceil(centre + half).astype(np.int64)
    limits = np.array(shape)
    low, high = np.clip(low, 0, limits), np.clip(high, 0, limits)
    return np.column_stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]])


def density_normalised(drops: np.ndarray, windows: np.ndarray, shape: Shape) -> np.ndarray:
    """P ⊘ N (eqs. 4-5): each drop added over its window, divided by the windows covering each
    pixel; 0 where none does. Windows are added in order, as in Algorithm 1."""
    total = np.zeros(shape)
    count = np.zeros(shape)
    for drop, (row0, row1, col0, col1) in zip(drops, windows):
        total[row0:row1, col0:col1] += drop
        count[row0:row1, col0:col1] += 1.0
    return np.divide(total, count, out=np.zeros(shape), where=count > 0)


def _check_correspondence(correspondence: Correspondence, image: np.ndarray, options: CisOptions) -> None:
    if correspondence.input_shape != image.shape[:2]:
        raise InvalidRequest("correspondence", f"was made for a {correspondence.input_shape} image, "
                                               f"the image is {image.shape[:2]}")
    if options.patch > min(image.shape[:2]):
        raise InvalidRequest("patch", f"{options.patch} px is larger than the {image.shape[0]}x{image.shape[1]} image")


def _no_points(correspondence: Correspondence, stride: int) -> InvalidRequest:
    """Why the stride's grid holds no correspondence point, naming what to change: the stride when a
    smaller one finds points (a coarse grid can step over the face the landmarks cover), else the
    correspondence (no canonical pixel maps onto the image)."""
    height, width = correspondence.canonical_shape
    # A stride of the frame's size or more leaves the centre alone: a larger one finds nothing new.
    smaller = next((s for s in range(min(stride, max(height, width)) - 1, 0, -1) if len(correspondence.points(s)[0])),
                   None)
    if smaller is None:
        return InvalidRequest("correspondence", "no pixel of the canonical face maps onto the image")
    return InvalidRequest("stride", f"{stride} canonical px: no point of that grid on the {height}x{width} canonical "
                                    f"frame lies on both the face and the image; use a smaller stride, e.g. {smaller} "
                                    "(the largest that finds points)")


def _drops(scorer: Scorer, image: np.ndarray, baseline: np.ndarray, windows: np.ndarray, chunk: int,
           progress: Progress | None) -> np.ndarray:
    """S_n = φ(I) − φ(I*_n) (float64) for every window, streamed through one scorer."""
    total = len(windows) + 1
    stream = scorer.stream(_occluded_chunks(image, baseline, windows, chunk))
    original = float(contrast(next(stream))[0])
    drops = np.empty(len(windows))
    done = 0
    for scores in stream:
        drops[done:done + len(scores)] = original - contrast(scores).astype(np.float64)
        done += len(scores)
        if progress is not None:
            progress(done + 1, total, "cis")
    return drops


def _occluded_chunks(image: np.ndarray, baseline: np.ndarray, windows: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """The original image alone, then the occluded images I*_n, `chunk` at a time."""
    yield image[None]
    for start in range(0, len(windows), chunk):
        part = windows[start:start + chunk]
        batch = np.repeat(image[None], len(part), axis=0)
        for occluded, (row0, row1, col0, col1) in zip(batch, part):
            occluded[row0:row1, col0:col1] = baseline[row0:row1, col0:col1]
        yield batch
