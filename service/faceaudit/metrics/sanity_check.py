"""Sanity check by cascading randomisation: do a method's maps depend on the model's weights?

Procedure (Adebayo et al. 2018 §3.1, "cascading randomization"; John et al. 2021 §4.1.2 use it):
    1. Layers: the parameterised nodes (Conv, ConvTranspose, Gemm, MatMul with at least one float
       initializer input) of the graph pruned to the spec's output, in reverse topological order
       (the reverse of ONNX's sorted node list), so layer 1 is the one nearest the output. A layer's
       parameters are its float initializer inputs (weights and bias) and, when its output feeds a
       BatchNormalization directly, that node's scale and bias (the learned ones; the running
       mean and variance are statistics, and a random variance could be negative). An initializer
       shared by several layers is randomised with the first (topmost) of them.
    2. Cascade: after step k the top k layers are randomised. Each parameter tensor W is re-drawn
       from N(mean(W), std(W)) (Adebayo re-initialise with the layers' original initialisers, which
       an ONNX file does not record; a Gaussian of the tensor's own moments keeps the scale of the
       activations), from numpy Generator(seed), layer by layer and within a layer in the graph's
       initializer order, so step k's model is step k−1's with one more layer redrawn. The model is rebuilt (faceaudit.engine.prepare.prepare, same
       spec and runtime) and every method's map recomputed (faceaudit.methods.registry.explain).
    3. Similarity of each randomised map with the original map of the same image, averaged over
       images (Adebayo §3.1, Fig. 4): Spearman rank correlation (scipy.stats.spearmanr) of the maps
       (`spearman`) and of their absolute values (`spearman_abs`: a map whose sign flips but whose
       pattern stays is caught by the second), and SSIM (`ssim`, skimage.metrics.structural_similarity)
       of the maps, each min-max normalised to [0, 1], data range 1, skimage's 7×7 uniform window (the
       largest odd window that fits a smaller map). Step 0 is the original model (1 unless a map is
       constant). The HOG similarity of Adebayo's Fig. 4 is not computed.
Signed maps (Adebayo compare "with and without absolute value"): their signed map of a gradient-like
    signal s_c (c: colour channel) is Σ_c s_c, their absolute one Σ_c |s_c| (PAIR saliency's
    VisualizeImageDiverging / VisualizeImageGrayscale). The methods with a channel reduction
    (gradient, guided_backprop, deconvnet, smoothgrad, integrated_gradients, guided_gradcam: those
    whose options have `reduce`) are therefore run with this game's `reduce`, by default "sum": one
    map per image, Σ_c s_c, whose series `spearman` is Adebayo's signed one; `spearman_abs` ranks
    |Σ_c s_c|, which equals their Σ_c |s_c| where a pixel's channels agree in sign (always for
    greyscale models, whose channel gradients are one gradient times positive luma weights) and
    otherwise differs (the methods return channel-reduced maps; a second map per image would double
    the cost). reduce="max_abs" checks the maps these methods give by default (max_c |s_c| ≥ 0):
    then, as for every map that is ≥ 0 (Grad-CAM, EBP, ...), `spearman_abs` repeats `spearman`.
    The methods' options in the result record the reduction each one ran with; the notes say, per
    method, whether its maps were signed. Adebayo's 99th-percentile clipping before comparing is not
    applied.
Methods: this game computes its own maps, so the methods to check and their options are options
(`methods`, `method_options`); the items give only the images and targets (their maps are ignored).
Verdict: a method passes when, after the last step, both |ρ| and |ρ_abs| are below `threshold`.
    Adebayo et al. judge by eye (no number); 0.5 is our convention: above it, half or more of the
    rank structure survives destroying the weights, which is what the test is meant to catch. SSIM
    is reported, not judged.
Degenerate maps: a randomised model can give a constant map (or a method refuses, like Grad-CAM's
"empty" map: a ModelOutputError): its rank correlation and SSIM with the original are undefined and
counted as 0 (the map no longer carries the original's structure), and reported in `constant_maps` /
`failed_maps`. A constant original map is refused (nothing to compare); so is a map narrower than
3 pixels (no SSIM window fits).
Cost: (steps + 1) × methods × images maps, and one model build per step; bound it with `layers`
(how many layers the cascade randomises, from the top) and `every` (maps every k-th step; the last
step is always evaluated). Progress counts maps, not forward passes; forward_passes sums the maps'.
Those not run on the model's own session (every map of a randomised model, white-box maps of the
original) are also added to an open off-session meter (metrics.off_session_passes).
Reference:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim. Sanity checks for saliency
    maps. NeurIPS 2018.
Touches: a copy of the model's graph (never the caller's); runs the methods on rebuilt models;
the off-session pass meter.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from scipy.stats import spearmanr

from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.errors import InvalidRequest, ModelOutputError, UnsupportedModel
from faceaudit.methods.common import Progress, check_int, options_from
from faceaudit.methods.gradient import check_reduction
from faceaudit.methods.registry import METHODS, explain, get_method
from faceaudit.models.graph import select_outputs
from faceaudit.models.loading import LoadedModel
from faceaudit.metrics.common import GameItem, GamePoint, GameResult, PointSink, check_items
from faceaudit.metrics.off_session_passes import add_off_session_passes

GAME = "sanity_check"
PARAMETERISED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})


@dataclass(frozen=True)
class Layer:
    """One randomisation step: a parameterised node and the initializers it redraws."""

    node: str
    op_type: str
    parameters: tuple[str, ...]


def _reduces(method: str) -> bool:
    """Whether the method's options have a colour-channel reduction (`reduce`)."""
    return any(f.name == "reduce" for f in dataclasses.fields(get_method(method).options))


@dataclass(frozen=True)
class SanityCheckOptions:
    """Methods to check (registry names; a comma-separated string is accepted) and their options;
    `reduce`: the colour-channel reduction of the checked methods that have one ("sum": signed,
    Adebayo's; "max_abs": those methods' default maps); `layers`: how many layers the cascade
    randomises from the top (None = all); `every`: maps after every k-th step; `threshold` of the
    verdict; `seed` of the redrawn weights.

    `reduce` replaces the reduction of the options objects in `method_options` (an audit hands its
    methods' options over); a mapping there that asks for another reduction is refused."""

    methods: tuple[str, ...] = ("gradient",)
    method_options: Mapping[str, Any] = field(default_factory=dict)
    reduce: str = "sum"
    layers: int | None = None
    every: int = 1
    threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_reduction(self.reduce)
        names = self.methods.split(",") if isinstance(self.methods, str) else self.methods
        if not isinstance(names, (list, tuple)) or not names:
            raise InvalidRequest("methods", "name at least one method to check")
        if len(names) > len(METHODS):  # each is looked up and its maps made: refused before that
            raise InvalidRequest("methods", f"{len(names):,} names; there are {len(METHODS)} methods, each checked once")
        canonical = []
        for name in names:
            try:
                canonical.append(get_method(name.strip() if isinstance(name, str) else name).name)
            except InvalidRequest as exc:
                raise InvalidRequest("methods", str(exc).split(": ", 1)[-1]) from exc
        if len(set(canonical)) != len(canonical):
            raise InvalidRequest("methods", f"{canonical} names a method twice")
        object.__setattr__(self, "methods", tuple(canonical))
        if not isinstance(self.method_options, Mapping):
            raise InvalidRequest("method_options", "expected a method name → options mapping")
        chosen = {}
        for name, values in self.method_options.items():
            key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
            if key not in canonical:
                raise InvalidRequest("method_options", f"{name!r} is not one of the checked methods {canonical}")
            entry = get_method(key)
            if isinstance(values, Mapping) and values.get("reduce", self.reduce) != self.reduce and _reduces(key):
                raise InvalidRequest(f"method_options[{key}].reduce", f"{values['reduce']!r}: the sanity check "
                                     f"reduces colour channels with its own option reduce ({self.reduce!r})")
            try:
                chosen[key] = values if isinstance(values, entry.options) else options_from(entry.options, values)
            except InvalidRequest as exc:
                raise InvalidRequest(f"method_options[{key}].{exc.field}", str(exc).split(": ", 1)[-1]) from exc
        for key in canonical:  # every reducing method runs with the check's reduction, recorded in the options
            if _reduces(key):
                chosen[key] = dataclasses.replace(chosen.get(key) or get_method(key).options(), reduce=self.reduce)
        object.__setattr__(self, "method_options", chosen)
        if self.layers is not None:
            check_int("layers", self.layers, 1)
        check_int("every", self.every, 1)
        check_int("seed", self.seed, 0)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not 0 < t <= 1:
            raise InvalidRequest("threshold", f"{t!r} must be a rank correlation in (0, 1]")


def sanity_check(
    model: PreparedModel, *, items: Sequence[GameItem], options: SanityCheckOptions = SanityCheckOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Similarity (Spearman, of |maps|, SSIM) of each method's maps with the original maps along the cascade."""
    if not isinstance(options, SanityCheckOptions):
        raise InvalidRequest("options", f"expected SanityCheckOptions, got {type(options).__name__}")
    items = check_items(items, need_maps=False)
    proto = select_outputs(model.loaded.proto, [model.spec.require("output_name")])
    cascade = layers(proto)
    if not cascade:
        raise UnsupportedModel("the model has no Conv/Gemm/MatMul layer with float initializer weights to randomise")
    depth = len(cascade) if options.layers is None else min(options.layers, len(cascade))
    steps = [k for k in range(1, depth + 1) if k % options.every == 0 or k == depth]
    methods = list(options.methods)
    total = (len(steps) + 1) * len(methods) * len(items)
    tally = {"maps": 0, "passes": 0}
    counts = {name: {"constant_maps": 0, "failed_maps": 0} for name in methods}
    failures: list[str] = []

    def maps_of(current: PreparedModel, name: str, original: bool) -> list[np.ndarray | None]:
        found = []
        # Inside a map the game's own count is re-reported after every batch: a caller's callback that
        # raises (a cancelled call) stops a long map within one batch.
        inside = None if progress is None else (lambda *_: progress(tally["maps"], total, f"{GAME}: {name}"))
        for i, item in enumerate(items):
            try:
                saliency = explain(current, name, image=item.image, target=item.target,
                                   options=options.method_options.get(name), progress=inside)
            except ModelOutputError as exc:
                if original:
                    raise ModelOutputError(f"items[{i}]: {name} on the original model: {exc}") from exc
                counts[name]["failed_maps"] += 1
                failures.append(f"{name}, image {i}: {exc}")
                found.append(None)
            else:
                tally["passes"] += saliency.forward_passes
                if not original or not get_method(name).black_box:  # black-box maps of `model` ran on its session
                    add_off_session_passes(saliency.forward_passes)
                found.append(np.asarray(saliency.values, np.float64))
            tally["maps"] += 1
            if progress is not None:
                progress(tally["maps"], total, f"{GAME}: {name}")
        return found

    originals = {}
    for name in methods:
        originals[name] = maps_of(model, name, original=True)
        for i, values in enumerate(originals[name]):
            if np.ptp(values) == 0 or np.ptp(np.abs(values)) == 0:
                raise InvalidRequest(f"items[{i}]", f"{name}'s map of the original model is constant: nothing to compare")
            if min(values.shape) < 3:
                raise InvalidRequest(f"items[{i}]", f"{name}'s map is {values.shape[0]}×{values.shape[1]}: "
                                                    "SSIM needs at least 3×3 pixels")
    curves = {name: {quantity: [] for quantity in SIMILARITIES} for name in methods}
    x: list[float] = []
    randomised = onnx.ModelProto()
    randomised.CopyFrom(proto)
    rng = np.random.default_rng(options.seed)
    done = 0
    for index, k in enumerate([0, *steps]):
        for layer in cascade[done:k]:
            _redraw(randomised, layer, rng)
        done = k
        current = model if k == 0 else _rebuild(model, randomised, k)
        x.append(float(k))
        for name in methods:
            fresh = originals[name] if k == 0 else maps_of(current, name, original=False)
            pairs = list(zip(originals[name], fresh))
            for f in fresh:
                counts[name]["constant_maps"] += k > 0 and f is not None and np.ptp(f) == 0
            values = {quantity: float(np.mean([similarity(o, f) for o, f in pairs]))
                      for quantity, similarity in SIMILARITIES.items()}
            for quantity, value in values.items():
                curves[name][quantity].append(value)
            if on_point is not None:
                on_point(GamePoint(GAME, name, index, float(k), values))
    summary = {name: _verdict(curves[name], counts[name], options.threshold, depth, len(cascade)) for name in methods}
    signed = {name: any((o < 0).any() for o in originals[name]) for name in methods}
    notes = _notes(options, cascade, depth, untouched(proto, cascade), counts, failures, signed)
    return GameResult(game=GAME, x_label="layers_randomised", x=x, curves=curves, summary=summary,
                      options=dataclasses.asdict(options), forward_passes=tally["passes"], notes=notes)


def _verdict(curve: dict[str, list[float]], counts: dict[str, int], threshold: float, depth: int,
             total_layers: int) -> dict[str, float]:
    """The final similarities and pass (1) / fail (0): both |ρ| and |ρ_abs| below the threshold."""
    final, final_abs = curve["spearman"][-1], curve["spearman_abs"][-1]
    return {"final_spearman": final, "final_spearman_abs": final_abs, "final_ssim": curve["ssim"][-1],
            "pass": float(max(abs(final), abs(final_abs)) < threshold), "threshold": float(threshold),
            "layers_randomised": float(depth), "layers_total": float(total_layers),
            **{key: float(value) for key, value in counts.items()}}


def _notes(options: SanityCheckOptions, cascade: list[Layer], depth: int, kept: list[str],
           counts: dict[str, dict[str, int]], failures: list[str], signed: dict[str, bool]) -> list[str]:
    notes = [
        "x: number of layers randomised from the output down (0 = the original model); cascade order: "
        + ", ".join(f"{layer.node} ({layer.op_type})" for layer in cascade[:depth]),
        "spearman: rank correlation of the randomised map with the original (spearman_abs: of |maps|); ssim: "
        "structural similarity of the maps, each min-max normalised to [0, 1]; means over images",
        "maps per method: " + "; ".join(_series(name, options, signed[name]) for name in options.methods),
        f"pass: |final spearman| and |final spearman_abs| both below {options.threshold:g} "
        "(our convention; Adebayo et al. judge by eye); ssim is not judged; HOG similarity is not computed",
        "weights redrawn from N(mean, std) of each tensor; BatchNormalization scale and bias with their layer",
        "the items' maps are not used: each method's maps are computed here, on the original and randomised models",
    ]
    if kept:
        notes.append(f"{len(kept)} float initializers belong to no layer and keep their values (e.g. PRelu slopes, "
                     f"BatchNormalization not right after a layer, running statistics): {', '.join(kept[:5])}"
                     + (", ..." if len(kept) > 5 else ""))
    if depth < len(cascade):
        notes.append(f"only the top {depth} of {len(cascade)} layers were randomised (option layers)")
    if any(c["constant_maps"] or c["failed_maps"] for c in counts.values()):
        notes.append("constant or failed randomised maps count as similarity 0"
                     + (f"; first failure: {failures[0]}" if failures else ""))
    return notes


def _series(name: str, options: SanityCheckOptions, signed: bool) -> str:
    """How one method's two Spearman series relate: which channel reduction, whether the maps are signed."""
    reduction = (f"colour channels reduced by {options.reduce} ("
                 + ("Σ_c, signed" if options.reduce == "sum" else "max_c |·|") + "), ") if _reduces(name) else ""
    return name + ": " + reduction + ("signed maps" if signed else "maps ≥ 0: spearman_abs repeats spearman")


def layers(proto: onnx.ModelProto) -> list[Layer]:
    """The parameterised layers nearest the output first, each with the initializers it redraws."""
    floats = {t.name for t in proto.graph.initializer if t.data_type in FLOAT_TYPES}
    norms = {}
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization" and node.input:
            norms.setdefault(node.input[0], node)
    found, taken = [], set()
    for position, node in reversed(list(enumerate(proto.graph.node))):
        if node.op_type not in PARAMETERISED:
            continue
        parameters = [name for name in node.input if name in floats]
        norm = norms.get(node.output[0]) if node.output else None
        if norm is not None:
            parameters += [name for name in norm.input[1:3] if name in floats]
        parameters = [name for name in dict.fromkeys(parameters) if name not in taken]
        if parameters:
            taken.update(parameters)
            found.append(Layer(node.name or f"{node.op_type}#{position}", node.op_type, tuple(parameters)))
    return found


def untouched(proto: onnx.ModelProto, cascade: list[Layer]) -> list[str]:
    """Float initializers no layer redraws, in graph order (reported: the check leaves them as trained)."""
    covered = {name for layer in cascade for name in layer.parameters}
    return [t.name for t in proto.graph.initializer if t.data_type in FLOAT_TYPES and t.name not in covered]


def _redraw(proto: onnx.ModelProto, layer: Layer, rng: np.random.Generator) -> None:
    """Replace the layer's initializers in place by Gaussian draws with each tensor's mean and std."""
    wanted = set(layer.parameters)
    for tensor in proto.graph.initializer:
        if tensor.name in wanted:
            values = numpy_helper.to_array(tensor)
            drawn = rng.normal(float(values.mean()), float(values.std()), values.shape).astype(values.dtype)
            tensor.CopyFrom(numpy_helper.from_array(drawn, tensor.name))


def _rebuild(model: PreparedModel, proto: onnx.ModelProto, step: int) -> PreparedModel:
    """The randomised graph prepared like the original: same spec, provider, threads and batch size."""
    data = proto.SerializeToString()
    loaded = LoadedModel(proto=proto, sha256=hashlib.sha256(data).hexdigest(),
                         source=f"<{model.loaded.source}, top {step} layers randomised>", size_bytes=len(data))
    runtime = RuntimeOptions(provider="cuda" if model.session.provider == "CUDAExecutionProvider" else "cpu",
                             threads=model.session.threads, max_batch=model.session.max_batch)
    return prepare(loaded, model.spec, runtime)


def _spearman(original: np.ndarray, fresh: np.ndarray | None) -> float:
    """Rank correlation of the flattened maps; 0 for a failed or constant randomised map."""
    if fresh is None or np.ptp(fresh) == 0:
        return 0.0
    return float(spearmanr(original.ravel(), fresh.ravel()).statistic)


def _spearman_abs(original: np.ndarray, fresh: np.ndarray | None) -> float:
    return _spearman(np.abs(original), None if fresh is None else np.abs(fresh))


def normalised_ssim(original: np.ndarray, fresh: np.ndarray | None) -> float:
    """SSIM of two maps (at least 3×3), each min-max normalised to [0, 1], data range 1, skimage's 7×7
    uniform window or the largest odd one that fits; 0 for a failed or constant randomised map."""
    if fresh is None or np.ptp(fresh) == 0:
        return 0.0
    from skimage.metrics import structural_similarity  # imported here: skimage takes about a second to import

    side = min(original.shape)
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(_unit(original), _unit(fresh), data_range=1.0, win_size=window))


def _unit(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / np.ptp(values)


SIMILARITIES = {"spearman": _spearman, "spearman_abs": _spearman_abs, "ssim": normalised_ssim}
