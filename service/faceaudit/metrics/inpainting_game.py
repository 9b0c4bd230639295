"""Inpainting game: does the map point at the face part whose change made the probe a non-mate?

Items (InpaintingItem, not GameItem):
    A quadruplet: original probe OP, original mate OM, inpainted probe IP (OP with one face part
    inpainted), inpainted non-mate IN (OM with the same part inpainted), the inpainted region's
    (H, W) mask on the probe, and the compared methods' maps over OP (contrastive: OM as mate, IN as
    non-mate; larger = more important). GameItem carries one image and one target, and a quadruplet
    has two probes (OP is blended towards IP), hence a type of its own. faceaudit.demo.quadruplet
    makes exact ones (its probe_region is the region). Where IP differs from OP outside the region,
    no mask inside it yields IP; such played quadruplets are named in the notes.
Filter (Wang et al. 2025, §4.4, eqs. 7–8), cosines of the model's embeddings, match = cos ≥ τ:
    keep iff cos(OP, OM) ≥ τ and cos(OP, IN) < τ      (7)
         and cos(IP, IN) ≥ τ and cos(IP, OM) < τ      (8)
    The paper states eqs. 7–8 with the L2 distance between embeddings (≤ τ_L2 for a match) and
    does not say that they are L2-normalised. For L2-normalised embeddings ‖a − b‖² = 2 − 2·cos,
    so the two agree with τ = 1 − τ_L2²/2; on raw embeddings the distance depends on their norms
    and a τ_L2 has no cosine equivalent. τ is `tau`, or derived from `fpr` on `impostor_scores`
    (metrics.thresholds: the lowest τ whose false positive rate there is ≤ fpr; TPR on
    `genuine_scores` is reported).
    Dropped quadruplets are counted per failed condition (one may fail several) in
    summary["quadruplets"] and named in the notes; the game runs on the kept ones only.
Saliency masks, K = `steps` steps of cumulative map mass (the authors' "percent-density" masks):
    w = max(map, 0): the mass is the positive part (a contrastive map's negative values say
    "like the non-mate", which is no evidence for the mate). Pixels are taken in descending order
    of w; ties in the seeded random order every game uses (metrics.ordering, keyed by seed and
    item index), shared by all series of the item. At step k the mask holds pixel j of that order
    iff the mass before it is below k/K of the total: K·Σ_{i<j} w_i < k·Σ w. Step 0 is the empty
    mask, step K every pixel with w > 0; pixels with w = 0 are never taken, so a map with no
    positive value never changes the probe.
    The rule equals the authors' `cdf > 1 − p` on the ascending normalised cumulative sum (they
    break ties with 1e-9 noise instead of a permutation).
Blend and success (Wang §3.2):
    blended probe = (1 − m)·OP + m·IP with the binary mask m; success iff cos(blend, IN) ≥ τ.
    SR(k) = successes / kept quadruplets. (Williford et al.'s code counts a blend as the non-mate
    when it is closer to IN than to OM; we follow Wang and the issue: τ.)
False alarm rate (pooled over the kept quadruplets, "the proportion of FPs in the total amount of
pixels outside the inpainted region"): FAR(k) = Σ_q |m_q(k) \\ region_q| / Σ_q |outside region_q|.
SR at a FAR t (summary "sr_at_far_<t>"): the highest SR among the sweep's points with FAR ≤ t, an
    SR some saliency threshold reaches without exceeding t. Wang et al. show only the curves (Figs.
    3–6, points joined by lines); reading a number off such a line interpolates between two
    thresholds and claims an SR that neither gives (SR need not even grow with FAR), so we do not.
    Step 0 (FAR 0, SR 0 by eq. 7) makes it defined for every t.
Series: every method of the items; "random", a uniform U[0, 1) map per item drawn from
    (seed, item index) (the baseline every game runs); "oracle" (option), the region mask itself:
    its FAR is 0 at every step and its last step blends exactly the region.
Output: x = k/K (fraction of the map's positive mass), curves[series] = {"sr", "far",
    "mask_fraction" (mean fraction of pixels in the mask)}; a GamePoint per (series, step), step
    after step, as soon as every quadruplet's blend of that step is scored.
Cost: forward passes = 4 per quadruplet (the filter) + one per (series, kept quadruplet, step)
    whose mask differs from the previous step's (unchanged masks reuse the verdict, step 0 uses
    eq. 7's). Memory: per kept quadruplet its OP and IP and one pixel-rank map per series (the
    smallest unsigned dtype, ordering.ranks_of: uint16 up to 256×256 pixels); float32 (H, W, 3)
    images are used without a copy, others converted once; the four faces are held for the filter
    only. Blends are streamed in chunks of `chunk` images through Scorer.stream, bounded by
    CHUNK_BYTES.
Reference:
    J. R. Williford, B. B. May, J. Byrne. Explainable face recognition. ECCV 2020 (the game;
    STR's xfr/inpainting_game.py, create_threshold_masks, read for the mask rule, not run).
    Y. Wang et al. Gradient-weighted extended EBP for embedding networks. 2025, §3.2, §4.4.
Touches: the model's forward passes only (Scorer.stream); no global state.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import OutputTarget, Scorer
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.images.io import check_image_array
from faceaudit.methods.common import Progress, check_int, check_passes, chunk_size
from faceaudit.metrics.common import GamePoint, GameResult, PointSink, check_map
from faceaudit.metrics.ordering import pixel_order, ranks_of
from faceaudit.metrics.thresholds import Threshold, check_scores, threshold_at_fpr

__all__ = ["InpaintingGameOptions", "InpaintingItem", "inpainting_game", "sr_at_far"]

GAME = "inpainting_game"
RANDOM, ORACLE = "random", "oracle"
MAX_CHUNK = 4096
MAX_STEPS = 1000
MAX_FARS = 100  # operating points reported per series
FACES = ("original_probe", "original_mate", "inpainted_probe", "inpainted_non_mate")
CONDITIONS = (  # (summary key, pair of FACES indices, must match), eqs. 7–8
    ("op_om_not_matched", (0, 1), True),
    ("op_in_matched", (0, 3), False),
    ("ip_in_not_matched", (2, 3), True),
    ("ip_om_matched", (2, 1), False),
)


@dataclass(frozen=True)
class InpaintingItem:
    """One quadruplet (see the module docstring): four model-sized RGB images in [0, 255], the
    inpainted region on the probe ((H, W) bool), the methods' (H, W) maps over the original probe."""

    original_probe: np.ndarray = field(repr=False)
    original_mate: np.ndarray = field(repr=False)
    inpainted_probe: np.ndarray = field(repr=False)
    inpainted_non_mate: np.ndarray = field(repr=False)
    region: np.ndarray = field(repr=False)
    maps: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    name: str = ""


@dataclass(frozen=True)
class InpaintingGameOptions:
    """τ: `tau` (a cosine), or `fpr` with `impostor_scores` (and optional `genuine_scores` for the TPR
    at τ), cosines of impostor / genuine pairs by the same model. No τ is right for every model, so
    there is no default: the game refuses options without one (the defaults build, for the shared
    game signature). `steps` of cumulative map mass (100: 1 % steps); `fars` at which SR is
    reported; `oracle` adds the region-mask series; `seed` of the random map and of the tie order;
    `chunk` images (blended probes) per streamed chunk."""

    tau: float | None = None
    fpr: float | None = None
    impostor_scores: tuple[float, ...] = ()
    genuine_scores: tuple[float, ...] = ()
    steps: int = 100
    fars: tuple[float, ...] = (0.01, 0.05)
    oracle: bool = True
    seed: int = 0
    chunk: int = 64

    def __post_init__(self) -> None:
        for name in ("impostor_scores", "genuine_scores", "fars"):
            object.__setattr__(self, name, tuple(check_scores(name, getattr(self, name), allow_empty=True).tolist()))
        if self.tau is not None and self.fpr is not None:
            raise InvalidRequest("tau", "give either tau (a cosine threshold) or fpr with impostor_scores, not both")
        if self.tau is not None:
            if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float, np.integer, np.floating)) \
                    or not -1 <= self.tau <= 1:
                raise InvalidRequest("tau", f"{self.tau!r} must be a cosine in [-1, 1]")
            for name in ("impostor_scores", "genuine_scores"):
                if getattr(self, name):
                    raise InvalidRequest(name, "only used to derive tau from fpr; tau is given")
        elif self.fpr is not None:
            self.threshold()  # validates fpr against the impostor scores
        elif self.impostor_scores or self.genuine_scores:
            raise InvalidRequest("fpr", "impostor and genuine scores need the false positive rate to derive tau at")
        check_int("steps", self.steps, 1, MAX_STEPS)
        if len(self.fars) > MAX_FARS:
            raise InvalidRequest("fars", f"{len(self.fars):,} false alarm rates; at most {MAX_FARS}")
        if not self.fars or not all(0 < far <= 1 for far in self.fars):
            raise InvalidRequest("fars", f"{self.fars} must be one or more false alarm rates in (0, 1]")
        if not isinstance(self.oracle, (bool, np.bool_)):
            raise InvalidRequest("oracle", f"{self.oracle!r} is not true or false")
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, MAX_CHUNK)

    def threshold(self) -> Threshold | None:
        """τ derived from fpr (None when tau is given or neither is)."""
        if self.fpr is None:
            return None
        return threshold_at_fpr(self.impostor_scores, self.fpr, self.genuine_scores)


@dataclass
class _Quadruplet:
    """A validated item: float32 OP and IP (the blend's sources), the region, the maps."""

    index: int
    name: str
    probe: np.ndarray
    inpainted: np.ndarray
    region: np.ndarray
    maps: dict[str, np.ndarray]


@dataclass
class _Plan:
    """One (series, quadruplet): pixel ranks of the mask order, mask size and false positives per step."""

    ranks: np.ndarray  # (H, W): position of each pixel in the order
    counts: np.ndarray  # (K + 1,) pixels in the mask at each step
    false_positives: np.ndarray  # (K + 1,) of them outside the region


def inpainting_game(
    model: PreparedModel, *, items: Sequence[InpaintingItem], options: InpaintingGameOptions = InpaintingGameOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """SR-vs-FAR curves of every method whose maps the quadruplets carry, with random and oracle baselines."""
    if not isinstance(options, InpaintingGameOptions):
        raise InvalidRequest("options", f"expected InpaintingGameOptions, got {type(options).__name__}")
    if model.spec.require("kind") != "embedding":
        raise InvalidRequest("model", "the inpainting game needs an embedding model (quadruplets of faces)")
    model.check_vector_output()
    if options.tau is None and options.fpr is None:
        raise InvalidRequest("tau", "the inpainting game needs a verification threshold: tau, or fpr with impostor_scores")
    threshold = options.threshold()
    tau = float(options.tau) if threshold is None else threshold.tau
    quads, faces = _validated(model, items)
    scorer = Scorer(model, OutputTarget())
    cosines, non_mates = _filter_pass(scorer, faces, options.chunk, progress)
    del faces  # OM and IN are needed no further, only IN's embedding
    failed = {name: (cosines[:, k] >= tau) != must for k, (name, _, must) in enumerate(CONDITIONS)}
    dropped = np.logical_or.reduce(list(failed.values()))
    if dropped.all():
        reasons = ", ".join(f"{name}: {int(mask.sum())}" for name, mask in failed.items())
        raise InvalidRequest("items", f"none of the {len(quads)} quadruplets meets eqs. 7–8 at tau={tau:.6g} ({reasons})")
    kept = [q for q, drop in zip(quads, dropped, strict=True) if not drop]
    series = [*sorted(quads[0].maps), RANDOM, *([ORACLE] if options.oracle else [])]
    plans = [[_plan(_series_map(name, q, options.seed), q, options) for q in kept] for name in series]
    far, mask_fraction = _rates(plans, kept)
    sweep = _Sweep(scorer, kept, non_mates[~dropped], plans, series, tau, far, mask_fraction, options, on_point, progress)
    sr = sweep.run()
    curves = {name: {"sr": sr[s].tolist(), "far": far[s].tolist(), "mask_fraction": mask_fraction[s].tolist()}
              for s, name in enumerate(series)}
    summary: dict[str, dict[str, float]] = {
        name: {f"sr_at_far_{t:g}": sr_at_far(sr[s], far[s], t) for t in options.fars} for s, name in enumerate(series)
    }
    summary["quadruplets"] = {"given": len(quads), "kept": len(kept), "dropped": int(dropped.sum()),
                              **{name: int(mask.sum()) for name, mask in failed.items()}}
    summary["threshold"] = {"tau": tau} if threshold is None else {
        name: value for name, value in threshold.to_dict().items() if value is not None}
    return GameResult(
        game=GAME, x_label="fraction of the map's positive mass in the mask",
        x=[k / options.steps for k in range(options.steps + 1)], curves=curves, summary=summary,
        options=_options_dict(options), forward_passes=scorer.stats.images,
        notes=_notes(quads, failed, dropped, tau, threshold, plans, series),
    )


def sr_at_far(sr: np.ndarray, far: np.ndarray, target: float) -> float:
    """The highest SR among the points with FAR ≤ target (step 0 has FAR 0), no interpolation."""
    return float(np.max(sr[far <= target]))


def _validated(model: PreparedModel,
               items: Sequence[InpaintingItem]) -> tuple[list[_Quadruplet], list[list[np.ndarray]]]:
    """The quadruplets checked (images model-sized, region a non-trivial mask, same methods' finite maps),
    and per quadruplet its four faces (FACES order) for the filter."""
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidRequest("items", "the inpainting game needs at least one quadruplet")
    shape = (model.spec.require("height"), model.spec.require("width"))
    quads, faces, methods = [], [], None
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, InpaintingItem):
            raise InvalidRequest(where, f"expected an InpaintingItem, got {type(item).__name__}")
        four = [_face(getattr(item, name), shape, f"{where}.{name}") for name in FACES]
        region = _region(item.region, shape, f"{where}.region")
        if methods is None:
            methods = sorted(item.maps)
            for reserved in (RANDOM, ORACLE):
                if reserved in item.maps:
                    raise InvalidRequest(f"{where}.maps", f"{reserved!r} names a baseline series; rename the method")
        elif sorted(item.maps) != methods:
            raise InvalidRequest(f"{where}.maps", f"every quadruplet needs maps of the same methods {methods}, "
                                                  f"got {sorted(item.maps)}")
        maps = {name: check_map(values, shape, f"{where}.maps[{name}]") for name, values in item.maps.items()}
        quads.append(_Quadruplet(i, str(item.name), four[0], four[2], region, maps))
        faces.append(four)
    return quads, faces


def _face(raw: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    """A validated model-sized float32 RGB face: the caller's array itself when it already is one (no copy)."""
    image = check_image_array(raw, field=where)
    if image.shape[:2] != shape:
        raise InvalidRequest(where, f"expected a model-sized {shape} image, got {image.shape[:2]}")
    same = isinstance(raw, np.ndarray) and raw.dtype == np.float32 and raw.shape == image.shape
    return raw if same else image


def _region(raw: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    """The region as a bool (H, W) mask with pixels inside and outside."""
    region = np.asarray(raw)
    if region.shape != shape:
        raise InvalidRequest(where, f"region shape {region.shape} is not the image's {shape}")
    if region.dtype != bool:
        if not np.issubdtype(region.dtype, np.number) or not np.isin(region, (0, 1)).all():
            raise InvalidRequest(where, "the region must be a mask of 0/1 or true/false values")
        region = region.astype(bool)
    if not region.any() or region.all():
        raise InvalidRequest(where, "the region must cover some pixels and leave some outside")
    return region


def _filter_pass(scorer: Scorer, faces: list[list[np.ndarray]], chunk: int,
                 progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) cosines of each quadruplet's pairs in CONDITIONS order and (n, D) unit IN embeddings,
    from one streamed pass over the four faces of every quadruplet (`chunk` faces per chunk, rounded
    to whole quadruplets)."""
    per_chunk = max(1, chunk_size(chunk, faces[0][0]) // len(FACES))
    starts = range(0, len(faces), per_chunk)
    chunks = (np.stack([face for four in faces[start : start + per_chunk] for face in four]) for start in starts)
    cosines = np.empty((len(faces), len(CONDITIONS)))
    non_mates: list[np.ndarray] = []
    for start, rows in zip(starts, scorer.stream(chunks), strict=True):
        unit = _unit(rows).reshape(-1, len(FACES), rows.shape[1])
        for k, (_, (a, b), _) in enumerate(CONDITIONS):
            cosines[start : start + len(unit), k] = np.einsum("nd,nd->n", unit[:, a], unit[:, b])
        non_mates.append(unit[:, FACES.index("inpainted_non_mate")])
        if progress is not None:
            progress(len(FACES) * (start + len(unit)), len(FACES) * len(faces), f"{GAME}: eqs. 7–8")
    return cosines, np.concatenate(non_mates)


def _unit(rows: np.ndarray) -> np.ndarray:
    """Embeddings (B, D) scaled to unit length in float64 (cosines as the scorer computes them)."""
    emb = rows.astype(np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ModelOutputError("the model returned an all-zero embedding: cosine undefined")
    return emb / norms


def _series_map(name: str, quad: _Quadruplet, seed: int) -> np.ndarray:
    """The map a series thresholds on this quadruplet."""
    if name == RANDOM:
        return np.random.default_rng([seed, quad.index, 1]).random(quad.region.shape)
    if name == ORACLE:
        return quad.region.astype(np.float64)
    return quad.maps[name]


def _plan(values: np.ndarray, quad: _Quadruplet, options: InpaintingGameOptions) -> _Plan:
    """Mask order, mask sizes and false positives at every step for one map (module docstring)."""
    steps = options.steps
    mass = np.maximum(values.ravel().astype(np.float64), 0.0)  # float64: cumulative sums of 10⁵ pixels
    order = pixel_order(mass, descending=True, seed=options.seed, index=quad.index)
    ordered = mass[order]
    running = np.cumsum(ordered)
    before = np.concatenate([[0.0], running[:-1]])  # mass strictly before each pixel of the order
    total = float(running[-1])  # the same sums: a zero-mass pixel's `before` equals it exactly, never below
    if total > 0:
        counts = np.searchsorted(before * steps, np.arange(steps + 1) * total, side="left")
    else:
        counts = np.zeros(steps + 1, dtype=np.intp)
    outside = np.concatenate([[0], np.cumsum(~quad.region.ravel()[order])])
    return _Plan(ranks_of(order, values.shape), counts, outside[counts])


def _rates(plans: list[list[_Plan]], quads: list[_Quadruplet]) -> tuple[np.ndarray, np.ndarray]:
    """FAR (pooled) and mean mask fraction, (S, K + 1) each: known before any forward pass."""
    outside = sum(int((~q.region).sum()) for q in quads)
    pixels = quads[0].region.size
    far = np.array([np.sum([p.false_positives for p in row], axis=0) / outside for row in plans])
    fraction = np.array([np.mean([p.counts for p in row], axis=0) / pixels for row in plans])
    return far, fraction


class _Sweep:
    """Scores every blended probe whose mask changed since the previous step, step after step, in one stream.

    Blends are made lazily into one reused chunk buffer (Scorer.stream copies a chunk before it asks
    for the next). `entries` records, in the order they were made, each blend (step, series,
    quadruplet, chunk number) and the end of each (step, series) (quadruplet -1): once every blend
    before such an end is scored, that step's point of that series is complete and streamed.
    """

    def __init__(self, scorer: Scorer, quads: list[_Quadruplet], non_mates: np.ndarray, plans: list[list[_Plan]],
                 series: list[str], tau: float, far: np.ndarray, mask_fraction: np.ndarray,
                 options: InpaintingGameOptions, on_point: PointSink | None, progress: Progress | None) -> None:
        self.scorer, self.quads, self.non_mates, self.plans, self.series = scorer, quads, non_mates, plans, series
        self.tau, self.far, self.mask_fraction = tau, far, mask_fraction
        self.steps, self.on_point, self.progress = options.steps, on_point, progress
        self.chunk = chunk_size(options.chunk, quads[0].probe)
        counts = np.array([[plan.counts for plan in row] for row in plans])  # (S, n, K + 1)
        self.changed = (counts[:, :, 1:] != counts[:, :, :-1]) & (counts[:, :, 1:] > 0)  # (S, n, K)
        self.total = int(self.changed.sum())
        check_passes("items", self.total)
        self.success = np.zeros((len(series), len(quads)), dtype=bool)  # step 0 blends nothing: eq. 7
        self.sr = np.zeros((len(series), self.steps + 1))
        self.entries: deque[tuple[int, int, int, int]] = deque()
        self.chunk_quads: deque[np.ndarray] = deque()  # quadruplet of each row, per chunk made

    def run(self) -> np.ndarray:
        """SR (S, K + 1) at every step of every series, streaming the points."""
        for s in range(len(self.series)):
            self._point(0, s)
        done = 0
        for number, rows in enumerate(self.scorer.stream(self._blends())):
            quads = self.chunk_quads.popleft()
            matched = iter(np.einsum("bd,bd->b", _unit(rows), self.non_mates[quads]) >= self.tau)
            while self.entries and (self.entries[0][2] < 0 or self.entries[0][3] == number):
                step, s, q, _ = self.entries.popleft()
                if q < 0:
                    self._point(step, s)
                else:
                    self.success[s, q] = next(matched)
            done += len(rows)
            if self.progress is not None:
                self.progress(done, self.total, GAME)
        for step, s, _, _ in self.entries:  # ends after the last blend: nothing left to score
            self._point(step, s)
        return self.sr

    def _blends(self) -> Iterator[np.ndarray]:
        """Chunks of blended probes (1 − m)·OP + m·IP, step-major, then series, then quadruplet."""
        buffer = np.empty((self.chunk, *self.quads[0].probe.shape), dtype=np.float32)
        quads: list[int] = []
        number = 0
        for step in range(1, self.steps + 1):
            for s, row in enumerate(self.plans):
                for q in np.flatnonzero(self.changed[s, :, step - 1]):
                    out = buffer[len(quads)]
                    np.copyto(out, self.quads[q].probe)
                    np.copyto(out, self.quads[q].inpainted, where=(row[q].ranks < row[q].counts[step])[..., None])
                    quads.append(int(q))
                    self.entries.append((step, s, int(q), number))
                    if len(quads) == self.chunk:
                        self.chunk_quads.append(np.array(quads))
                        quads, number = [], number + 1
                        yield buffer
                self.entries.append((step, s, -1, -1))
        if quads:
            self.chunk_quads.append(np.array(quads))
            yield buffer[: len(quads)]

    def _point(self, step: int, s: int) -> None:
        self.sr[s, step] = float(self.success[s].mean())
        if self.on_point is not None:
            self.on_point(GamePoint(GAME, self.series[s], step, step / self.steps, {
                "sr": self.sr[s, step], "far": float(self.far[s, step]),
                "mask_fraction": float(self.mask_fraction[s, step])}))


def _options_dict(options: InpaintingGameOptions) -> dict[str, Any]:
    """The options as reported: the score lists by their sizes (τ and its rates are in the summary)."""
    values = dataclasses.asdict(options)
    for name in ("impostor_scores", "genuine_scores"):
        values[name] = len(values[name])
    return values


def _notes(quads: list[_Quadruplet], failed: dict[str, np.ndarray], dropped: np.ndarray, tau: float,
           threshold: Threshold | None, plans: list[list[_Plan]], series: list[str]) -> list[str]:
    if threshold is None:
        origin = "given"
    else:
        origin = (f"derived from fpr={threshold.fpr:g} on {threshold.impostors} impostor scores "
                  f"(reached {threshold.achieved_fpr:g}" + (f", TPR {threshold.tpr:g} on {threshold.genuine} genuine"
                                                           if threshold.tpr is not None else "") + ")")
    notes = [f"match = cosine ≥ tau = {tau:.6g} ({origin}); a blended probe succeeds when it matches its "
             "inpainted non-mate"]
    kept = len(quads) - int(dropped.sum())
    notes.append(f"{kept} of {len(quads)} quadruplets meet eqs. 7–8 and are played")
    if dropped.any():
        reasons = "; ".join(f"{int(mask.sum())} {name.replace('_', ' ')}" for name, mask in failed.items() if mask.any())
        names = [q.name or f"items[{q.index}]" for q, drop in zip(quads, dropped, strict=True) if drop]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        notes.append(f"dropped {len(names)} ({reasons}; one may fail several): {shown}")
    notes.append("masks take pixels by descending positive map value until the step's share of the map's positive "
                 "mass; FAR = mask pixels outside the region / pixels outside it, pooled over quadruplets; "
                 "sr_at_far_<t> = highest SR among the points with FAR ≤ t (no interpolation)")
    leaky = [q.name or f"items[{q.index}]" for q, drop in zip(quads, dropped, strict=True)
             if not drop and ((q.probe != q.inpainted).any(axis=2) & ~q.region).any()]
    if leaky:
        notes.append(f"{len(leaky)} played quadruplet(s) have an inpainted probe that differs from the original "
                     f"outside the region, so no mask inside it gives the inpainted probe: {', '.join(leaky[:10])}")
    for name, row in zip(series, plans, strict=True):
        empty = sum(1 for plan in row if plan.counts[-1] == 0)
        if empty:
            notes.append(f"{name}: {empty} map(s) have no positive value; their probes are never blended")
    return notes
