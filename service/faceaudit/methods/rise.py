"""RISE: randomized input sampling for explanation.

Math:
    s_i = f(I ⊙ M_i + (1 − M_i) ⊙ B)              score of the probe I under mask M_i, B the fill
    paper:    S(λ) = 1/(N·p) Σ_i s_i · M_i(λ)                 Monte Carlo estimate of E[s·M(λ)]/p
    centred:  S_c(λ) = 1/(D·p) Σ_i (s_i − s̄) · M_i(λ)         s̄ = (1/N) Σ_i s_i, D = N − 1 for
              independent masks (see Estimators and Orthogonal blocks for D in blocks)
    f is the target class score of a classifier, or the cosine of the probe's embedding to the
    mate's. With a non-mate the map is contrastive, S_mate − S_non-mate; both estimators are linear
    in the scores, so it is either estimator applied to s_i^mate − s_i^non-mate (the contrastive
    form of Wang et al. 2025, §4.2.5).
Estimators (option `estimator`):
    `paper` is the published estimator. Write it as S = [Σ_i (s_i − s̄)·M_i + s̄·Σ_i M_i] / (N·p).
    The second term is the mean score times the number of masks that kept λ; its expectation is
    the constant map E[s], and its noise, s̄·(Σ_i M_i(λ) − N·p)/(N·p), carries no information
    about λ. It grows with the mean score, not with how much the score varies, so it dominates
    exactly for a confident class or a cosine to the mate near 1.
    `centred` (the default) drops that term: S_c is the sample covariance of s and M(λ) divided
    by p, so E[S_c] = Cov(s, M(λ))/p = E[S] − E[s], the paper's map minus a constant map in
    expectation. Pixel rankings (so every hiding, deletion and insertion game) and correlations
    with other maps are unchanged in expectation; only the offset and its noise are gone. For
    independent masks, dividing by D = N − 1 (Bessel's correction) makes the identity exact for
    every N ≥ 2; the 1/(N·p) of issue 8 would give (N−1)/N times S_c. Masks drawn in blocks
    (antithetic pairs at p = 0.5, orthogonal blocks) are dependent within a block, and Bessel's
    proof needs E[s_j·M_i] = E[s]·E[M] for j ≠ i. Such a block of n exchangeable masks has
    Σ_i M_i(λ) = n·p at every pixel, so for two masks of one block E[s_j·M_i] =
    E[s]·p − Cov(s, M(λ))/(n − 1), for any model. Then E[Σ (s_i − s̄)·M_i] =
    (N − 1 + P/(N·(n − 1)))·Cov(s, M(λ)), P = Σ_b m_b·(m_b − 1) over the blocks' sizes m_b (all n
    but the last), and D = N − 1 + P/(N·(n − 1)) is the unbiased divisor: N when every block is
    whole. (Antithetic pairs at p ≠ 0.5 do not sum to a constant; their centred map keeps
    D = N − 1 and a relative bias of order 1/N.) One streaming pass suffices: Σ (s_i − s̄)·M_i =
    Σ s_i·M_i − s̄·Σ M_i, from running float64 sums Σ s·M, Σ M and Σ s. Measured on a face
    embedder (issue 8; 7×7 cells, p = 0.5; fidelity = correlation with a 16,000-mask reference):
    centred 0.96 at 500 masks, paper 0.95 at 8000; bench/rise_estimators.py measures the zoo's
    models. Centred maps are signed (negative where keeping the pixel gives less than the average
    score), so they are returned with signed=True.
Antithetic masks (option `antithetic`):
    Masks come in pairs (2k, 2k+1) drawn from one row u of uniforms. Mask 2k is RISE's mask from u;
    mask 2k+1 has the grid G' = [u_cell ≥ 1 − p] (the antithetic variate of G = [u_cell < p]) and
    the same shift. At p = 0.5, G' = 1 − G, and as the bilinear upsampling is linear with weights
    summing to 1, M_{2k+1} = 1 − M_{2k} pixel for pixel (the clip to [0, 1] does nothing). The
    complement is taken before the shift and the shift is kept: with a new shift the pair would be
    complementary on the coarse grid only, not at the pixels the estimator sums over; and as the
    shift is independent of the grid, each mask alone is still distributed as a RISE mask, so the
    paper estimator keeps its expectation (the centred one with its divisor for blocks, see
    Estimators). For p ≠ 0.5 the literal complement 1 − G would keep cells with probability 1 − p
    and change the expectation; the antithetic grid keeps p (for p < 0.5 the two grids are
    disjoint, for p > 0.5 they cover every cell). At p = 0.5, Σ_i M_i(λ) = N/2 exactly, so the
    paper estimator's mask-count noise vanishes: S_c = S − s̄ within a run (D = N), the two maps
    are the same up to an offset. Antithetic masks do not help the centred estimator: Σ_i (s_i − s̄)·M_i = Σ_i (s_i − s̄)·(M_i − ½), and for a score linear in the
    mask both masks of a pair give the same term, so a pair carries one mask's information and the
    noise for N forward passes is up to that of N/2 independent masks. Use them with `paper`, to
    reproduce the published map at the centred estimator's noise. N must be even; an odd `chunk`
    is rounded up by one so that pairs never straddle chunks. They need design=independent: they
    are a design of their own (n = 2), and orthogonal blocks already balance every cell.
Orthogonal blocks (option `design`, "orthogonal" or "independent"):
    Why: the centred estimator's noise is mostly cross-cell. For λ in cell c, Σ_i (s_i − s̄)·M_i(λ)
    picks up every other cell c′'s effect on the score times Σ_i (g_ic′ − ½)(g_ic − ½), which
    i.i.d. grids make zero only on average (it shrinks like 1/√N). Blocks make it zero exactly.
    Design: a block is n = 2^k ≥ s² + 1 masks (64 for 7×7 cells). Its grids are s² distinct
    non-constant columns of the n×n Sylvester Hadamard matrix H (±1, H[i, j] =
    (−1)^popcount(i & j), scipy.linalg.hadamard), chosen at random, each multiplied by an
    independent random sign, rows in random order; cell c of mask i is kept iff the entry is +1.
    Each column is balanced (n/2 kept) and the centred columns are orthogonal:
    Σ_i (g_ic − ½)(g_ic′ − ½) = n/4·δ_cc′. All masks of a block share one shift (dy, dx).
    Unbiased: with independent random signs the entries of one row are independent fair coins,
    so each mask alone is a RISE grid with p = 0.5, and the shift is uniform and independent of
    it: every mask is distributed as a RISE mask, so the paper estimator keeps its expectation
    for any model, and the centred one with its divisor D for blocks (see Estimators: here
    Σ_i M_i(λ) = n/2 in a block because the columns are balanced and the bilinear weights sum to
    1); only the joint law of the masks within a block changes (antithetic pairs are n = 2).
    Less noise: with one shift, M_i(λ) = Σ_c w_c(λ)·g_ic with weights fixed in the block, so for
    a score additive in the mask, s = a + Σ_c γ_c·g_c, a whole block's centred sum is exactly
    (n/4)·Σ_c γ_c·w_c(λ): the cross-cell noise is gone, and with one shift the map is exact
    (tests/methods/test_rise_orthogonal.py). What remains is the score's non-additivity
    (interactions between cells) and the shift: N/n blocks sample N/n shifts only, so the shifts
    are stratified: block b's shift is u_b = frac(u₀,ₕ + ⌊b/2⌋·α) in [0, 1)², h = b mod 2,
    dy = floor(u_b,1·C_h), dx = floor(u_b,2·C_w), the R2 low-discrepancy sequence α = (1/φ, 1/φ²),
    φ³ = φ + 1 (Roberts 2018), rotated by a uniform random start u₀,ₕ, one for the even blocks and
    one for the odd ones: each block's shift is exactly uniform (unbiased), any run of blocks
    covers the shift square evenly, and the two halves of early stopping (even and odd blocks)
    draw independent shift sequences (with one start they were tied, which made the split-half
    estimate read low). Rows are shuffled so that a partial
    block is a random subset of rows (in Hadamard order the first n/2 rows would repeat
    columns and hold one constant). When it does not help: a strongly non-additive score (a
    saturated softmax, a cosine dominated by interactions) keeps most of its noise; a partial
    block (N not a multiple of n) cancels less, and with estimator=paper its Σ_i M_i(λ) ≠ n/2
    brings back the mean score × mask-count noise (use N a multiple of n with `paper`).
    keep must be 0.5: a two-level orthogonal array keeps each cell half the time; other keep
    values need design=independent (refused with InvalidRequest("design")).
Early stopping (option `target_fidelity`):
    With a target fidelity ρ*, `masks` is the maximum N. Masks are dealt alternately to two halves
    by sample: a pair with antithetic masks, a whole block with orthogonal ones (even and odd blocks
    draw independent shift sequences), else one mask; so the halves are independent maps of N/2
    masks each (with the centred estimator each half is
    centred by its own mean). `check_every` is rounded up to whole samples (100 → 128 with blocks
    of 64), and orthogonal chunks hold whole blocks or divide one, so checks fall between blocks.
    At the first chunk boundary at or after every multiple of that step, the Pearson correlation r over
    pixels of the two half-maps gives the Spearman–Brown estimate ρ = 2r/(1 + r): the correlation
    to expect between two independent maps of N masks, the map's reliability (averaging the halves
    halves the noise variance). For a map = signal + independent noise, ρ = var(signal)/var(map)
    and the expected correlation with the noiseless (N → ∞) map is √ρ: that is the fidelity the
    bench measures (correlation with a high-N reference), and the run stops once √ρ ≥ ρ*.
    Neighbouring pixels share grid cells, so their noise is correlated: r varies like a correlation
    over about (s+1)² values, not H·W, but is not biased. A map without signal (a score that ignores
    the image) gives r ≈ 0 and runs to the maximum. With a target, chunks are at most
    that step and each chunk is scored before the next is made, so the run stops right at
    the first check that passes: the N reported equals the forward passes, never exceeds `masks`,
    and the map is the fixed-N map of that N. A low target (say 0.5) can pass on noise: r over the
    map has only about (cells + 1)² independent values.
    Metadata (SaliencyMap.extra): masks (N used), split_half_r, spearman_brown and
    fidelity_estimate (√spearman_brown) over the final halves (also without a target; None where a
    half-map is constant), stop_reason ("target_fidelity", or "masks" when all masks were used),
    sample_unit (masks dealt together to one half: 1, 2 or the block size n), design (the mask
    design used: `design`, or the default chosen for it, see Defaults).
    Progress: progress(done, masks, "rise") after every chunk, against the maximum; after an early
    stop one more call progress(done, masks, "rise: converged") with the real done (below the
    total), so a client streaming progress sees why the run ended early.
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
    dx = floor(u_i[s²+1]·C_w); the sequence of masks is the same whatever the chunk size. (With
    antithetic masks, pair k uses row u_k. Orthogonal blocks draw u₀ = `random(2)` first, then
    per block the columns (`permutation` of 1..n−1, the first s²), the signs (`integers(0, 2)`)
    and the row order (`permutation(n)`); only the rows a chunk needs are built.) The upsampled
    crop is R[dy:dy+H] · G · Cᵀ[dx:dx+W] with the interpolation matrices R and C, computed in
    float32 for a whole chunk at once.
Memory:
    masks are generated, applied, scored and accumulated `chunk` at a time; peak memory does not
    depend on N.
Defaults:
    masks=4000 (N), cells=7 (s), keep=0.5 (p): the paper's settings (s=7, p=0.5; N=4000 for
    ResNet50, 8000 for VGG16).
    We take the ResNet50 count because common face embedders are ResNets (ArcFace's IResNet); set
    `masks` to 8000 to reproduce the VGG16 setting. (The reference repository's notebook uses N=6000,
    s=8, p=0.1 instead; we follow the paper.) Fill zero: the paper multiplies the image by the
    mask. We normalise by N·p as the paper and the reference (`sal / N / p1`) do; TorchRay divides
    by N only, so its maps are ours times p.
    estimator=centred (issue 8, see Estimators; `paper` reproduces published maps),
    design=None: orthogonal blocks, unless the estimator is `paper`, keep ≠ 0.5 or antithetic
    pairs are asked for, which get the paper's i.i.d. masks (`paper` then reproduces the published
    maps; orthogonal blocks need keep = 0.5; antithetic pairs are a design of their own); the map's
    metadata records the design used. Orthogonal blocks, like the centred estimator, keep the
    paper's expectation (every mask is a RISE mask) for less noise, so every map and game is
    unchanged in expectation and closer to it. bench/rise_estimators.py (64×64, 7×7 cells, mean of
    3 seeds, fidelity against a 16,000-mask reference) measured centred maps of orthogonal blocks
    at 250 masks at 0.992 (vgg, zoo), 0.962 (iresnet, zoo), 0.989 and 0.992 (the demo's trained
    attribute classifier and embedder), against 0.884, 0.771, 0.955 and 0.935 with independent
    masks, which need 2000 to 4000 masks for those values; early stopping at a raw split-half r of
    0.95 used 256 to 811 masks (mean of 3 seeds per model) instead of 1024 to 4000.
    antithetic=False, target_fidelity=None (a fixed N, as in the paper), check_every=None: 64 with
    orthogonal blocks (one block of 7×7 cells: a check costs two H×W maps and one correlation,
    nothing next to 64 forward passes, and with orthogonal blocks targets are reached within a few
    hundred masks, where checks every 250 masks overshot by up to 100 %; the run stops at most one
    step, plus a batch in flight, after the N at which the target was reached), 250 with
    independent masks (frequent checks stop on a lucky estimate more often there: optional
    stopping, fidelity 0.94 reached for a target of 0.95 on the zoo's models with checks every 64,
    0.96 every 250; see bench/README.md). With a target, `masks` must hold two samples (two
    blocks, two pairs) so that both halves exist.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from faceaudit.engine.fills import FillOptions
from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import Scorer
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.methods.common import (
    ExplainTarget, Progress, Run, check_int, check_request, chunk_size, contrast, scoring_target,
)
from faceaudit.methods.saliency_map import SaliencyMap

MAX_MASKS = 1_000_000  # forward passes one request may ask for
MAX_CHUNK = 4096  # masks held in memory at once
ESTIMATORS = ("centred", "paper")
DESIGNS = ("orthogonal", "independent")


@dataclass(frozen=True)
class RiseOptions(FillOptions):
    """RISE options; defaults from Petsiuk et al. and issue 8 (see the module docstring); fills as FillOptions."""

    masks: int = 4000  # N, forward passes; the maximum N when target_fidelity is set
    cells: int = 7  # s, grid cells per side (at most the image's shorter side)
    keep: float = 0.5  # p, probability that a cell is kept, in (0, 1]
    seed: int = 0  # seed of the numpy Generator that draws the masks
    chunk: int = 64  # masks generated, applied and scored together (rounded to whole pairs or blocks)
    estimator: str = "centred"  # "centred": Σ (s − s̄)·M / ((N−1)·p); "paper": Σ s·M / (N·p)
    design: str | None = None  # "orthogonal" (blocks of orthogonal grids, one shift each), "independent" (i.i.d.)
    antithetic: bool = False  # masks in pairs with complementary grids and a shared shift; N even
    target_fidelity: float | None = None  # stop once the estimated fidelity √(2r/(1+r)) reaches it, in (0, 1)
    check_every: int | None = None  # masks between convergence checks (at chunk boundaries; whole pairs or blocks)

    @property
    def mask_design(self) -> str:
        """The design used: `design`, or unset, independent masks for the paper estimator, keep ≠ 0.5 or
        antithetic pairs (the published setup, or where blocks do not apply), else orthogonal blocks."""
        if self.design is not None:
            return self.design
        return "independent" if self.estimator == "paper" or self.keep != 0.5 or self.antithetic else "orthogonal"

    @property
    def check_interval(self) -> int:
        """Masks between convergence checks: `check_every`, or unset, 64 with orthogonal blocks, 250 without."""
        if self.check_every is not None:
            return int(self.check_every)
        return 64 if self.mask_design == "orthogonal" else 250

    def __post_init__(self) -> None:
        check_int("masks", self.masks, 1)
        if self.masks > MAX_MASKS:
            raise LimitExceeded(f"masks: {self.masks} masks exceed the limit of {MAX_MASKS:,} per request")
        check_int("cells", self.cells, 1)
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float, np.integer, np.floating)) or not 0 < self.keep <= 1:
            raise InvalidRequest("keep", f"{self.keep!r} must be a probability in (0, 1]")
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, MAX_CHUNK)
        super().__post_init__()
        if self.estimator not in ESTIMATORS:
            raise InvalidRequest("estimator", f"{self.estimator!r} must be one of {', '.join(ESTIMATORS)}")
        if not isinstance(self.antithetic, (bool, np.bool_)):
            raise InvalidRequest("antithetic", f"{self.antithetic!r} must be true or false")
        if self.design is not None and self.design not in DESIGNS:
            raise InvalidRequest("design", f"{self.design!r} must be one of {', '.join(DESIGNS)}, or unset")
        if self.design == "orthogonal" and self.keep != 0.5:
            raise InvalidRequest("design", f"orthogonal masks keep each cell with probability 0.5; keep={self.keep} "
                                           "needs design=independent")
        if self.antithetic and self.design == "orthogonal":
            raise InvalidRequest("antithetic", "antithetic pairs are a design of their own (orthogonal blocks already "
                                               "balance every cell); use them with design=independent")
        if self.antithetic and self.masks % 2:
            raise InvalidRequest("masks", f"{self.masks} must be even with antithetic masks (they come in pairs)")
        fidelity = self.target_fidelity
        if fidelity is not None and (isinstance(fidelity, bool) or not isinstance(fidelity, (int, float))
                                     or not 0 < fidelity < 1):
            raise InvalidRequest("target_fidelity", f"{fidelity!r} must be a correlation in (0, 1), or unset")
        if self.check_every is not None:
            check_int("check_every", self.check_every, 1)
        unit = sample_unit(self)
        if fidelity is not None and self.masks < 2 * unit:
            raise InvalidRequest("target_fidelity", f"early stopping compares two halves of whole samples of {unit} "
                                                    f"masks: masks ({self.masks}) must be at least {2 * unit}")


def check_cells(options: RiseOptions, height: int, width: int) -> None:
    """A grid cell must cover at least one pixel: cells ≤ the image's shorter side."""
    side = min(height, width)
    if options.cells > side:
        raise InvalidRequest("cells", f"{options.cells} cells exceed the image's shorter side ({side} px)")


def rise_masks(rng: np.random.Generator, count: int, cells: int, keep: float, height: int, width: int,
               chunk: int, antithetic: bool = False, design: str = "independent") -> Iterator[np.ndarray]:
    """Yield `count` RISE masks as (b, height, width) float32 chunks in [0, 1], b ≤ chunk.

    design "independent": one row of `rng.random` per mask, or per pair of masks if `antithetic`
    (antithetic chunks hold an even number of masks: an odd `chunk` is rounded up by one);
    "orthogonal": blocks of randomised Hadamard columns with one shift each (keep must be 0.5).
    See the module docstring. The masks do not depend on `chunk`.
    """
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    rows = _bilinear_weights(cells, (cells + 1) * cell_h)
    cols = _bilinear_weights(cells, (cells + 1) * cell_w)
    if design == "orthogonal":
        grid_chunks = _orthogonal_grids(rng, count, cells, cell_h, cell_w, chunk)
    else:
        grid_chunks = _independent_grids(rng, count, cells, keep, cell_h, cell_w, chunk, antithetic)
    for grids, dy, dx in grid_chunks:
        crop_rows = rows[dy[:, None] + np.arange(height)]  # (b, H, s)
        crop_cols = cols[dx[:, None] + np.arange(width)]  # (b, W, s)
        masks = crop_rows @ grids.astype(np.float32).reshape(-1, cells, cells) @ crop_cols.transpose(0, 2, 1)
        yield np.clip(masks, 0.0, 1.0, out=masks)


GridChunks = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (b, s²) bool grids, (b,) dy, (b,) dx


def _independent_grids(rng: np.random.Generator, count: int, cells: int, keep: float, cell_h: int, cell_w: int,
                       chunk: int, antithetic: bool) -> GridChunks:
    """The paper's i.i.d. grids and shifts (antithetic: pairs sharing one row of draws)."""
    step = chunk + chunk % 2 if antithetic else chunk
    for start in range(0, count, step):
        size = min(step, count - start)
        if antithetic:
            draws = np.repeat(rng.random((-(-size // 2), cells * cells + 2)), 2, axis=0)[:size]
            grids = draws[:, :-2] < keep
            grids[1::2] = draws[1::2, :-2] >= 1 - keep
        else:
            draws = rng.random((size, cells * cells + 2))
            grids = draws[:, :-2] < keep
        yield grids, (draws[:, -2] * cell_h).astype(np.intp), (draws[:, -1] * cell_w).astype(np.intp)


def block_size(cells: int) -> int:
    """Masks per orthogonal block: the smallest power of two n ≥ s² + 1 (s² non-constant Hadamard columns)."""
    return 1 << int(cells * cells).bit_length()


# The R2 sequence's step (1/φ₂, 1/φ₂²), φ₂ the plastic number: the 2-D Kronecker sequence whose
# prefixes cover the unit square most evenly (Roberts 2018).
_PLASTIC = 1.324717957244746
R2_STEP = np.array([1 / _PLASTIC, 1 / _PLASTIC**2])


@dataclass(frozen=True)
class OrthogonalBlock:
    """One block of n = block_size(s) masks: Hadamard columns, sign flips, row order and one shift."""

    columns: np.ndarray  # (s²,) distinct non-constant columns of the Sylvester Hadamard matrix, one per cell
    flips: np.ndarray  # (s²,) 1 where the cell's column is negated
    order: np.ndarray  # (n,) the block's rows in random order
    dy: int
    dx: int

    def grids(self, first: int, stop: int) -> np.ndarray:
        """(stop − first, s²) grids of masks first..stop−1: g = [H[row, column]·(−1)^flip > 0].

        The Sylvester matrix (scipy.linalg.hadamard) has H[i, j] = (−1)^popcount(i & j), so only
        the rows asked for are built: a block of large grids never exists in full.
        """
        parity = np.bitwise_count(self.order[first:stop, None] & self.columns[None]) & 1
        return (parity ^ self.flips) == 0


def orthogonal_blocks(rng: np.random.Generator, cells: int, cell_h: int, cell_w: int) -> Iterator[OrthogonalBlock]:
    """The endless sequence of orthogonal blocks. Even and odd blocks (the two halves early stopping
    deals them to) follow two R2 shift sequences with independent random starts, drawn first, so the
    halves are independent maps."""
    size, count = block_size(cells), cells * cells
    starts = rng.random((2, 2))
    for index in itertools.count():
        columns = rng.permutation(np.arange(1, size))[:count]
        flips = rng.integers(0, 2, count)
        order = rng.permutation(size)
        shift = (starts[index % 2] + (index // 2) * R2_STEP) % 1.0
        yield OrthogonalBlock(columns, flips, order, int(shift[0] * cell_h), int(shift[1] * cell_w))


def _orthogonal_grids(rng: np.random.Generator, count: int, cells: int, cell_h: int, cell_w: int,
                      chunk: int) -> GridChunks:
    """Grids and shifts of `count` orthogonal masks in chunks of `chunk`, whatever the block boundaries."""
    blocks = orthogonal_blocks(rng, cells, cell_h, cell_w)
    size = block_size(cells)
    block, index = next(blocks), 0
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        grids, dy, dx = [], [], []
        position = start
        while position < stop:
            if position == (index + 1) * size:
                block, index = next(blocks), index + 1
            first, last = position - index * size, min(stop, (index + 1) * size) - index * size
            grids.append(block.grids(first, last))
            dy.append(np.full(last - first, block.dy, np.intp))
            dx.append(np.full(last - first, block.dx, np.intp))
            position += last - first
        yield np.concatenate(grids), np.concatenate(dy), np.concatenate(dx)


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
                 phase: str, stop: Callable[[], bool] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(masks, scores) chunk by chunk: the RISE masks of `options` applied to `image` and scored.

    The scorer works a batch ahead, so each chunk's masks wait in a queue until its scores arrive
    (at most a few chunks). Reports progress(masks scored, N, phase) after every chunk. With a
    target fidelity, chunks are at most `check_every` masks and each is scored before the next is
    made (Scorer.stream's flush), so a run stops at the first check that passes, with no masks
    beyond it; once `stop()` is true no new chunk is generated.
    """
    height, width = image.shape[:2]
    baseline = options.baseline(image)
    early = options.target_fidelity is not None
    chunk = chunk_size(min(options.chunk, check_step(options)) if early else options.chunk, image)
    if options.mask_design == "orthogonal":  # chunk boundaries on block boundaries: checks fall between blocks
        block = block_size(options.cells)
        chunk = chunk // block * block if chunk >= block else 1 << (int(chunk).bit_length() - 1)
    masks = rise_masks(np.random.default_rng(options.seed), options.masks, options.cells, options.keep,
                       height, width, chunk, options.antithetic, options.mask_design)
    pending: deque[np.ndarray] = deque()

    def perturbed() -> Iterator[np.ndarray]:
        for chunk in masks:
            if stop is not None and stop():
                return
            pending.append(chunk)
            yield perturb(image, baseline, chunk)

    done = 0
    for scores in scorer.stream(perturbed(), flush=early):
        chunk = pending.popleft()
        done += len(chunk)
        if progress is not None:
            progress(done, options.masks, phase)
        yield chunk, scores


def sample_unit(options: RiseOptions) -> int:
    """Masks that form one sample, dealt together to one half: an antithetic pair, an orthogonal block, or 1."""
    if options.mask_design == "orthogonal":
        return block_size(options.cells)
    return 2 if options.antithetic else 1


def balanced_block(options: RiseOptions) -> int:
    """Masks per block whose mask values sum to n·p at every pixel (orthogonal blocks, antithetic pairs at
    p = 0.5), whose masks are exchangeable: 1 where there are none (independent masks)."""
    if options.mask_design == "orthogonal" or options.antithetic and options.keep == 0.5:
        return sample_unit(options)
    return 1


def check_step(options: RiseOptions) -> int:
    """Masks between convergence checks: `check_every` rounded up to whole samples (pairs or blocks)."""
    unit = sample_unit(options)
    return -(-options.check_interval // unit) * unit


def half_indicator(count: int, half: np.ndarray | None) -> np.ndarray:
    """(2, count) float64 indicator of the half (0 or 1) each of `count` masks belongs to."""
    onehot = np.zeros((2, count))
    onehot[0 if half is None else half, np.arange(count)] = 1.0
    return onehot


def halves(which: int | None) -> slice:
    """The halves to sum: one (0 or 1), or both (None)."""
    return slice(None) if which is None else slice(which, which + 1)


class WeightedMaskSum:
    """Running Σ s_i·M_i, Σ M_i, Σ s_i and N in float64 for two halves of the masks: both RISE estimators.

    `add` takes the half (0 or 1) of each mask; without it every mask goes to half 0. The maps are
    those of half 0, half 1 or (`which=None`) all masks. `block`: masks per balanced block (see
    balanced_block), which sets the centred estimator's divisor.
    """

    def __init__(self, height: int, width: int, block: int = 1) -> None:
        self.block = block
        self.sm = np.zeros((2, height, width))
        self.m = np.zeros((2, height, width))
        self.s = np.zeros(2)
        self.counts = np.zeros(2, np.int64)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def add(self, masks: np.ndarray, scores: np.ndarray, half: np.ndarray | None = None) -> None:
        scores = scores.astype(np.float64)
        onehot = half_indicator(len(masks), half)
        # float64 products: the centred map subtracts two nearly equal sums. The chunk's float64
        # copy is bounded by CHUNK_BYTES (methods.common.chunk_size).
        sums = np.tensordot(np.concatenate([onehot * scores, onehot]), masks, axes=1)
        self.sm += sums[:2]
        self.m += sums[2:]
        self.s += onehot @ scores
        self.counts += onehot.sum(axis=1).astype(np.int64)

    def saliency(self, keep: float, estimator: str, which: int | None = None) -> np.ndarray:
        """S = Σ s_i·M_i / (N·p) (paper), or S_c = (Σ s_i·M_i − s̄·Σ M_i) / (D·p) (centred, D of centred_divisor).

        A map of no masks (a half of a one-mask run), or a centred map of one mask, is 0.
        """
        part = halves(which)
        n = int(self.counts[part].sum())
        sm = self.sm[part].sum(axis=0)
        if n < (1 if estimator == "paper" else 2):
            return np.zeros_like(sm)
        if estimator == "paper":
            return sm / (n * keep)
        return (sm - self.s[part].sum() / n * self.m[part].sum(axis=0)) / (centred_divisor(n, self.block) * keep)


def centred_divisor(count: int, block: int) -> float:
    """D that makes Σ (s_i − s̄)·M_i / (D·p) unbiased for Cov(s, M)/p: N − 1 + P/(N·(n − 1)).

    n = `block`, P = Σ_b m_b·(m_b − 1) over the blocks' sizes m_b (all n but the last): N − 1 for
    independent masks (n = 1, Bessel), N when every block is whole. See the module docstring.
    """
    if block == 1:
        return count - 1
    last = count % block
    pairs = count // block * block * (block - 1) + last * (last - 1)
    return count - 1 + pairs / (count * (block - 1))


class SplitSums(Protocol):
    def add(self, masks: np.ndarray, scores: np.ndarray, half: np.ndarray | None = None) -> None: ...


def accumulate(sums: SplitSums, values: Callable[[int | None], np.ndarray], scorer: Scorer, image: np.ndarray,
               options: RiseOptions, progress: Progress | None, phase: str,
               scores_of: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    """Stream the masks of `options` into `sums`, dealt to two halves; stop early at the target fidelity.

    `values(which)` is the map of half 0, half 1 or all masks (None); `scores_of` turns the
    scorer's output into the scores `sums` takes. Returns the map's convergence metadata.
    """
    unit, step = sample_unit(options), check_step(options)
    target = options.target_fidelity
    converged = False
    next_check = step
    done = 0
    for masks, scores in scored_masks(scorer, image, options, progress, phase, stop=lambda: converged):
        sums.add(masks, scores_of(scores), (np.arange(done, done + len(masks)) // unit) % 2)
        done += len(masks)
        if target is not None and not converged and done >= next_check:
            next_check = (done // step + 1) * step
            reliability = split_half(values)[1]
            converged = reliability is not None and fidelity(reliability) >= target
    converged = converged and done < options.masks  # stopping at the maximum is not an early stop
    if converged and progress is not None:
        progress(done, options.masks, f"{phase}: converged")
    r, reliability = split_half(values)
    return {"masks": done, "split_half_r": r, "spearman_brown": reliability,
            "fidelity_estimate": None if reliability is None else fidelity(reliability),
            "stop_reason": "target_fidelity" if converged else "masks", "sample_unit": unit,
            "design": options.mask_design}


def fidelity(reliability: float) -> float:
    """Expected correlation with the noiseless map of a map whose split-half reliability is given: √ρ."""
    return float(np.sqrt(max(reliability, 0.0)))


def split_half(values: Callable[[int | None], np.ndarray]) -> tuple[float | None, float | None]:
    """Pearson r of the two half-maps and the Spearman–Brown estimate 2r/(1+r) of the full map's reliability.

    (None, None) when a half-map is constant, and thus has no correlation.
    """
    a, b = values(0).ravel(), values(1).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if not denominator > 0:
        return None, None
    r = float(np.clip(a @ b / denominator, -1.0, 1.0))
    return r, (2 * r / (1 + r) if r > -1 else None)


def rise(model: PreparedModel, *, image: np.ndarray, target: ExplainTarget, options: RiseOptions = RiseOptions(),
         progress: Progress | None = None) -> SaliencyMap:
    """RISE map of `image` for `target` (a class, or a mate and optional non-mate)."""
    run = Run("rise", model, target, options)
    image, target = check_request(model, image, target)
    check_cells(options, *image.shape[:2])
    scorer = Scorer(model, scoring_target(model, target))
    total = WeightedMaskSum(*image.shape[:2], block=balanced_block(options))

    def values(which: int | None) -> np.ndarray:
        return total.saliency(options.keep, options.estimator, which)

    extra = accumulate(total, values, scorer, image, options, progress, "rise", contrast)
    signed = options.estimator == "centred" or target.non_mate is not None
    return run.result(values(None), scorer.stats, signed=signed, extra=extra)
