"""RISE: randomized input sampling for explanation.

Math:
    s_i = f(I ⊙ M_i + (1 − M_i) ⊙ B)              score of the probe I under mask M_i, B the fill
    S(λ) = 1/(N·p) Σ_i s_i · M_i(λ)                Monte Carlo estimate of E[f(I ⊙ M) | M(λ) = 1]
    f is the target class score of a classifier, or the cosine of the probe's embedding to the
    mate's. With a non-mate the map is contrastive, S_mate − S_non-mate, which is linear in the
    scores: 1/(N·p) Σ_i (s_i^mate − s_i^non-mate) · M_i (the contrastive form of Wang et al. 2025,
    §4.2.5).
Reference:
    V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized input sampling for explanation of black-box
    models", BMVC 2018 (arXiv:1806.07421); masks checked against the authors' implementation
    (github.com/eclique/RISE, explanations.py, `RISE.generate_masks` and `RISE.forward`).
Masks, as `generate_masks`:
    1. a binary s×s grid G, each cell 1 (kept) with probability p (`rand < p1`);
    2. G upsampled bilinearly to (s+1)·C_h × (s+1)·C_w, C_h = ceil(H/s), C_w = ceil(W/s), as
       skimage's `resize(order=1, mode='reflect', anti_aliasing=False)` does: pixel centres at
       half-pixel offsets, samples outside the grid mirrored about the edge cell (the same as
       `scipy.ndimage.zoom(G, order=1, mode='mirror', grid_mode=True)`); values clipped to [0, 1];
    3. a crop H×W at a shift (dy, dx) uniform in [0, C_h) × [0, C_w).
    Deviation, in the random draws only (the distribution is the same): the reference draws all
    grids, then the shifts, from numpy's global state. Here mask i uses row u_i ∈ [0, 1)^(s²+2) of
    `Generator(seed).random`: G = u_i[:s²] < p (row-major), dy = floor(u_i[s²]·C_h),
    dx = floor(u_i[s²+1]·C_w); the sequence of masks is the same whatever the chunk size. The
    upsampled crop is R[dy:dy+H] · G · Cᵀ[dx:dx+W] with the interpolation matrices R and C,
    computed in float32 for a whole chunk at once.
Defaults:
    masks=4000 (N), cells=7 (s), keep=0.5 (p): the paper's settings (s=7, p=0.5; N=4000 for
    ResNet50, 8000 for VGG16).
    We take the ResNet50 count because common face embedders are ResNets (ArcFace's IResNet); set
    `masks` to 8000 to reproduce the VGG16 setting. (The reference repository's notebook uses N=6000,
    s=8, p=0.1 instead; we follow the paper.) Fill zero: the paper multiplies the image by the
    mask. We normalise by N·p as the paper and the reference (`sal / N / p1`) do; TorchRay divides
    by N only, so its maps are ours times p.
Memory:
    masks are generated, applied, scored and accumulated `chunk` at a time; peak memory does not
    depend on N.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.fills import VGGFACE_MEAN_RGB, baseline_image, check_fill
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_inputs, check_int, contrast, scoring_target
from faceaudit.methods.saliency_map import SaliencyMap

MAX_MASKS = 1_000_000  # forward passes one request may ask for
MAX_CHUNK = 4096  # masks held in memory at once


@dataclass(frozen=True)
class RiseOptions:
    """RISE options; defaults from Petsiuk et al. (see the module docstring)."""

    masks: int = 4000  # N, forward passes
    cells: int = 7  # s, grid cells per side (at most the image's shorter side)
    keep: float = 0.5  # p, probability that a cell is kept, in (0, 1]
    seed: int = 0  # seed of the numpy Generator that draws the masks
    chunk: int = 64  # masks generated, applied and scored together
    fill: str = "zero"  # what hidden pixels become: a fill of faceaudit.engine.fills
    constant: tuple[float, ...] | None = None  # colour for fill "constant", RGB in [0, 255]
    blur_sigma: float = 5.0  # px, for fill "blur"
    dataset_mean: tuple[float, ...] = VGGFACE_MEAN_RGB  # colour for fill "dataset_mean"

    def __post_init__(self) -> None:
        check_int("masks", self.masks, 1)
        if self.masks > MAX_MASKS:
            raise LimitExceeded(f"masks: {self.masks} masks exceed the limit of {MAX_MASKS:,} per request")
        check_int("cells", self.cells, 1)
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not 0 < self.keep <= 1:
            raise InvalidRequest("keep", f"{self.keep!r} must be a probability in (0, 1]")
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, MAX_CHUNK)
        check_fill(self.fill, self.constant, self.blur_sigma, self.dataset_mean)


def check_cells(options: RiseOptions, height: int, width: int) -> None:
    """A grid cell must cover at least one pixel: cells ≤ the image's shorter side."""
    side = min(height, width)
    if options.cells > side:
        raise InvalidRequest("cells", f"{options.cells} cells exceed the image's shorter side ({side} px)")


def rise_masks(rng: np.random.Generator, count: int, cells: int, keep: float, height: int, width: int,
               chunk: int) -> Iterator[np.ndarray]:
    """Yield `count` RISE masks as (b, height, width) float32 chunks in [0, 1], b ≤ chunk.

    One row of `rng.random` per mask (see the module docstring), so the masks do not depend on
    `chunk`.
    """
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    rows = _bilinear_weights(cells, (cells + 1) * cell_h)
    cols = _bilinear_weights(cells, (cells + 1) * cell_w)
    for start in range(0, count, chunk):
        draws = rng.random((min(chunk, count - start), cells * cells + 2))
        grids = (draws[:, :-2] < keep).astype(np.float32).reshape(-1, cells, cells)
        dy = (draws[:, -2] * cell_h).astype(np.intp)
        dx = (draws[:, -1] * cell_w).astype(np.intp)
        crop_rows = rows[dy[:, None] + np.arange(height)]  # (b, H, s)
        crop_cols = cols[dx[:, None] + np.arange(width)]  # (b, W, s)
        masks = crop_rows @ grids @ crop_cols.transpose(0, 2, 1)
        yield np.clip(masks, 0.0, 1.0, out=masks)


def _bilinear_weights(cells: int, size: int) -> np.ndarray:
    """(size, cells) float32 matrix that upsamples `cells` values to `size` by linear interpolation.

    Output pixel o samples the grid at c = (o + ½)·cells/size − ½ (half-pixel centres), mirrored
    about the first and last cell when outside [0, cells − 1] (skimage mode 'reflect').
    """
    last = cells - 1
    coords = (np.arange(size) + 0.5) * (cells / size) - 0.5
    coords = np.clip(last - np.abs(last - np.abs(coords)), 0, last)
    low = np.floor(coords).astype(np.intp)
    frac = coords - low
    weights = np.zeros((size, cells))
    np.add.at(weights, (np.arange(size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(size), np.minimum(low + 1, last)), frac)
    return weights.astype(np.float32)


def perturb(image: np.ndarray, baseline: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """image·M + (1 − M)·baseline for each mask M: (b, H, W, 3) float32."""
    out = masks[..., None] * (image - baseline)
    out += baseline
    return out


def scored_masks(scorer: Scorer, image: np.ndarray, options: RiseOptions, progress: Progress | None,
                 phase: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(masks, scores) chunk by chunk: the RISE masks of `options` applied to `image` and scored.

    The scorer works a batch ahead, so each chunk's masks wait in a queue until its scores arrive
    (at most a few chunks). Reports progress(masks scored, N, phase) after every chunk.
    """
    height, width = image.shape[:2]
    baseline = baseline_image(image, options.fill, constant=options.constant, blur_sigma=options.blur_sigma,
                              dataset_mean=options.dataset_mean)
    masks = rise_masks(np.random.default_rng(options.seed), options.masks, options.cells, options.keep,
                       height, width, options.chunk)
    pending: deque[np.ndarray] = deque()

    def perturbed() -> Iterator[np.ndarray]:
        for chunk in masks:
            pending.append(chunk)
            yield perturb(image, baseline, chunk)

    done = 0
    for scores in scorer.stream(perturbed()):
        chunk = pending.popleft()
        done += len(chunk)
        if progress is not None:
            progress(done, options.masks, phase)
        yield chunk, scores


class WeightedMaskSum:
    """Running Σ_i s_i·M_i and N in float64, one chunk at a time: the RISE estimator."""

    def __init__(self, height: int, width: int) -> None:
        self.total = np.zeros((height, width))
        self.count = 0

    def add(self, masks: np.ndarray, scores: np.ndarray) -> None:
        self.total += np.tensordot(scores.astype(np.float64), masks, axes=1)
        self.count += len(masks)

    def saliency(self, keep: float) -> np.ndarray:
        """S = Σ_i s_i·M_i / (N·p)."""
        return self.total / (self.count * keep)


def rise(model: PreparedModel, *, image: np.ndarray, target: ExplainTarget, options: RiseOptions = RiseOptions(),
         progress: Progress | None = None) -> SaliencyMap:
    """RISE map of `image` for `target` (a class, or a mate and optional non-mate)."""
    run = Run("rise", model, target, options)
    image = check_inputs(model, image, target)
    check_cells(options, *image.shape[:2])
    scorer = Scorer(model, scoring_target(model, target))
    total = WeightedMaskSum(*image.shape[:2])
    for masks, scores in scored_masks(scorer, image, options, progress, "rise"):
        total.add(masks, contrast(scores))
    return run.result(total.saliency(options.keep), scorer.stats, extra={"masks": options.masks})
