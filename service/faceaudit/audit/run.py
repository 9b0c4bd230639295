"""A model-level audit: CMS overall and per group, saliency maps per image, the games; audit.json.

`run_audit(model, dataset, out)` writes under `out` (and nowhere else):
    audit.json                       every number, versions, model hash, options (schema below)
    maps/cms.npy|png                 the CMS (canonical frame), maps/cms_<group>.npy per group value,
                                     maps/cms_diff_<a>_vs_<b>.npy (see `audit.cms_groups` for the math)
    maps/rows/<row>/<method>.npy|png each image's map by each method (PNG: the map over the face),
                                     maps/rows/<row>/image.png the model-sized face
    cache/                           per-image maps keyed by model sha256, method, options and
                                     inputs (`audit.cache`): a rerun after a crash recomputes
                                     only the images that were not finished
audit.json (schema "faceaudit.audit/1"; map files are relative to the audit.json folder):
    schema, faceaudit_version, created, versions{python, numpy, onnx, onnxruntime},
    model{name, path, sha256, kind, spec}, dataset{path, manifest_sha256, images, group_column,
    groups{value: count}, ignored_columns, landmarks}, options{cms, methods{name: {...}},
    games{name: {...}}}, cms{overall{file, images}, groups{value: {file, images}},
    group_differences{"<a>_vs_<b>": {file, one_minus_correlation, l1}}, region_mass (with regions),
    frame, target}, methods{name: {images, forward_passes, seconds, region_mass (with regions)}},
    games{name: GameResult.to_dict() plus seconds and judges_maps (False for feature analyses)},
    games_skipped{name: reason} (default games that refused the data), methods_skipped{name: reason}
    (methods=["all"]: methods that refused the first image, left out),
    images[{row, name, group, label, files{image, <method>: {npy, png}}}], cache{hits, misses},
    notes[...]
Ground truth (datasets with a `region` column): a method's region_mass is the mean over images of
the share of the map's positive mass inside the image's region; the CMS's is the share of its
positive mass weighted by the mean region mask carried onto the canonical frame (1 where every
image's region covers the canonical pixel).
Method maps and game items: classifiers explain the row's class; embedding models the probe
against its mate (contrastive against the non-mate when there is one); see `audit.inputs`.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from PIL import Image

import faceaudit
from faceaudit.audit.cache import MapCache
from faceaudit.audit.cms_groups import cms_section, positive_mass, save_map
from faceaudit.audit.dataset import Dataset, load_dataset
from faceaudit.audit.game_inputs import GameInputs, why_not
from faceaudit.audit.inputs import Face, Inputs
from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.errors import FaceAuditError, InvalidRequest, UnsupportedModel
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.cms import CmsAccumulator
from faceaudit.methods.common import Progress, options_from
from faceaudit.methods.registry import METHODS, black_box_methods, explain, get_method
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.metrics.common import PointSink
from faceaudit.metrics.off_session_passes import add_off_session_passes
from faceaudit.metrics.registry import evaluate, games_for, get_game
from faceaudit.models import load_model, resolve_spec
from faceaudit.models.graph import quantised_operators

SCHEMA = "faceaudit.audit/1"
CMS = "cms"  # named among the methods: the CMS projected back onto each face joins the map games as a series
DEFAULT_METHODS = ("gradient", "occlusion")  # one white-box, one black-box map; quantised models: black-box only
OPTION_KEYS = ("cms", "methods", "games")
ALL = "all"  # methods=["all"]: every method that explains the model's kind


@dataclasses.dataclass(frozen=True)
class Plan:
    """What an audit runs, validated before any forward pass."""

    cms: CisOptions
    methods: dict[str, Any]  # name → options object
    games: dict[str, Any]  # name → options object
    explicit_games: bool  # named by the caller: a game that refuses the data is an error, not a skip
    explicit_methods: bool  # False for "all": a method that refuses the first image is left out
    cms_as_map: bool = False  # "cms" named among the methods: the CMS, projected onto each face, is a map series


def run_audit(model: PreparedModel | str | Path, dataset: Dataset | str | Path, out: str | Path, *,
              methods: Sequence[str] | None = None, games: Sequence[str] | None = None,
              spec: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
              progress: Progress | None = None, group_column: str | None = None,
              on_point: PointSink | None = None) -> Path:
    """Audit `model` over `dataset` into folder `out`; returns the path of audit.json.

    `model` is a PreparedModel, or a model path resolved with `spec` (loose spec values) and run
    with default runtime options. `methods` defaults to DEFAULT_METHODS; ["all"] runs every method
    that explains the model's kind, leaving out those that refuse the first image; "cms" among them adds the
    CMS, projected back onto each face, as one more map series of the map games (John et al. compare CMS
    with Grad-CAM, Grad-CAM++ and Score-CAM that way); `games` to every game that
    applies to the model and the dataset (`audit.game_inputs`); the sanity check checks the audit's
    methods unless its options name others. `options` maps "cms" to CIS options, "methods" and
    "games" to {name: options}. `progress(done, total, phase)` counts images ("cms and maps", told again
    after every batch of a map), then each game's forward passes (phase: the game's name); it may raise to
    stop the audit (a cancelled call); `on_point` receives every game's curve points as they are computed
    (`faceaudit evaluate` prints them).
    """
    model = _prepared(model, spec)
    if isinstance(dataset, Dataset):
        if group_column not in (None, dataset.group_column):
            raise InvalidRequest("group_column", f"the dataset was loaded with group column {dataset.group_column!r}")
        data = dataset
    else:
        data = load_dataset(dataset, group_column=group_column)
    inputs = Inputs(model, data)
    plan = _plan(model, data, methods, games, options)
    out = Path(out)
    (out / "maps" / "rows").mkdir(parents=True, exist_ok=True)
    cache = MapCache(out / "cache")
    overall = CmsAccumulator()
    groups = {value: CmsAccumulator() for value in data.groups()}
    totals = _MethodTotals(list(plan.methods))
    canonical_region = np.zeros(inputs.shape)  # sum of the regions carried onto the canonical frame
    played = GameInputs(model.spec.require("kind"))
    images = []
    projections = []  # (a face's maps, its correspondence): where the CMS series goes once the CMS is known
    for done, face in enumerate(inputs.faces(), start=1):
        within = _within(progress, done - 1, len(data.entries))
        with _named("options.cms", CisOptions):
            cis_map = _cached(cache, model, "cis", plan.cms, face, lambda f=face: cis(
                model, image=f.image, target=f.cms_target, options=plan.cms, progress=within,
                correspondence=f.correspondence))
        overall.add(cis_map)
        if face.entry.group is not None:
            groups[face.entry.group].add(cis_map)
        if face.region is not None:
            canonical_region += face.correspondence.to_canonical(face.region.astype(np.float64))
        maps, files = _method_maps(model, plan, cache, face, out, totals, within)
        played.add(face, maps)
        projections.append((maps, face.correspondence))
        images.append({"row": face.entry.row, "name": face.entry.name, "group": face.entry.group,
                       "label": _label(face), "files": files})
        if progress is not None:
            progress(done, len(data.entries), "cms and maps")
    cms, cms_maps = cms_section(overall, groups, out / "maps", inputs.backdrop())
    if all(e.region is not None for e in data.entries):
        cms["region_mass"] = _weighted_share(cms_maps["overall"].values, canonical_region / len(data.entries))
    if plan.cms_as_map:  # John et al. §4.2 compare "our maps projected back onto the input image"
        for maps, correspondence in projections:
            maps[CMS] = correspondence.to_input(cms_maps["overall"].values).astype(np.float32)
    results, skipped = _play(model, plan, played, progress, totals.skipped, on_point)
    document = {
        "schema": SCHEMA,
        "faceaudit_version": faceaudit.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "model": _model_section(model),
        "dataset": {"path": str(data.folder), "manifest_sha256": data.manifest_sha256, "images": len(data.entries),
                    "group_column": data.group_column, "groups": data.groups(),
                    "ignored_columns": list(data.ignored_columns), "landmarks": data.has_landmarks},
        "options": {"cms": dataclasses.asdict(plan.cms),
                    "methods": {n: dataclasses.asdict(o) for n, o in plan.methods.items()},
                    "games": {n: dataclasses.asdict(o) for n, o in plan.games.items()}},
        "cms": {**cms, "frame": "canonical" if data.has_landmarks else "input", "target": _cms_target(model)},
        "methods": totals.section(),
        "methods_skipped": totals.skipped,
        "games": results,
        "games_skipped": skipped,
        "images": images,
        "cache": {"hits": cache.hits, "misses": cache.misses},
        "notes": _notes(model, data),
    }
    path = out / "audit.json"
    path.write_text(json.dumps(_json_ready(document), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


class _MethodTotals:
    """Per method: images, forward passes and seconds of its maps, and its shares of mass on the regions."""

    def __init__(self, names: list[str]) -> None:
        self.stats = {name: {"images": 0, "forward_passes": 0, "seconds": 0.0} for name in names}
        self.region_mass: dict[str, list[float]] = {name: [] for name in names}
        self.skipped: dict[str, str] = {}  # methods=["all"]: methods that refused the first image, and why

    def add(self, name: str, result: SaliencyMap, region: np.ndarray | None) -> None:
        self.stats[name]["images"] += 1
        self.stats[name]["forward_passes"] += result.forward_passes
        self.stats[name]["seconds"] += result.timings.get("total_s", 0.0)
        if region is not None:
            self.region_mass[name].append(_share_inside(result.values, region))

    def section(self) -> dict[str, dict[str, Any]]:
        """audit.json's "methods"; region_mass only when every image had a region."""
        return {name: {**stats, **({"region_mass": float(np.mean(self.region_mass[name]))}
                                   if len(self.region_mass[name]) == stats["images"] else {})}
                for name, stats in self.stats.items() if name not in self.skipped}


def _within(progress: Progress | None, done: int, total: int) -> Progress | None:
    """The progress of one image's maps: the audit's callback, told again the images done so far (a map's
    own counts are not the audit's), so that a callback that raises (a cancelled call) stops a long map
    within one batch."""
    if progress is None:
        return None

    def report(*_: object) -> None:
        progress(done, total, "cms and maps")

    return report


def _method_maps(model: PreparedModel, plan: Plan, cache: MapCache, face: Face, out: Path,
                 totals: _MethodTotals, progress: Progress | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each method's map of one face (cached), saved under maps/rows/<row>/; the maps and their files."""
    folder = out / "maps" / "rows" / f"{face.entry.row:05d}"
    folder.mkdir(exist_ok=True)
    Image.fromarray(face.image.clip(0, 255).astype(np.uint8)).save(folder / "image.png")
    files: dict[str, Any] = {"image": _relative(folder / "image.png", out)}
    maps = {}
    for name, options in list(plan.methods.items()):
        try:
            result = _cached(cache, model, name, options, face,
                             lambda n=name, o=options: _explain(model, n, face, o, progress))
        except FaceAuditError as exc:
            if plan.explicit_methods or totals.stats[name]["images"]:
                raise
            del plan.methods[name]  # "all": a method that cannot explain this model is left out
            totals.skipped[name] = str(exc)
            continue
        maps[name] = result.values
        npy = save_map(result.values, folder, name, face.image, signed=result.signed)
        files[name] = {"npy": _relative(npy, out), "png": _relative(npy.with_suffix(".png"), out)}
        totals.add(name, result, face.region)
    return maps, files


def _explain(model: PreparedModel, method: str, face: Face, options: Any, progress: Progress | None) -> SaliencyMap:
    """One map, computed (not cached): a white-box map's passes ran on an instrumented session, off the
    model's own, so they go to the off-session meter a server may hold open (a cached map's are not run)."""
    with _named(f"options.methods.{method}", type(options)):
        result = explain(model, method, image=face.image, target=face.target, options=options, progress=progress)
    if not get_method(method).black_box:
        add_off_session_passes(result.forward_passes)
    return result


def _play(model: PreparedModel, plan: Plan, played: GameInputs, progress: Progress | None,
          left_out: Mapping[str, str], on_point: PointSink | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Each planned game's result (with its seconds), and the default games that refused the data.
    The sanity check does not check methods that were `left_out` of the audit."""
    results, skipped = {}, {}
    for name, options in plan.games.items():
        started = time.perf_counter()
        if name == "sanity_check" and left_out:
            options = plan.games[name] = dataclasses.replace(
                options, methods=tuple(m for m in options.methods if m not in left_out),
                method_options={m: o for m, o in options.method_options.items() if m not in left_out})
        try:
            if name == "inpainting_game":
                options = plan.games[name] = played.inpainting_options(model, options)
            with _named(f"options.games.{name}", type(options)):
                result = evaluate(model, name, options=options, progress=progress, on_point=on_point,
                                  **played.inputs(name))
            results[name] = {**result.to_dict(), "seconds": time.perf_counter() - started,
                             "judges_maps": get_game(name).maps}
        except InvalidRequest as exc:
            if plan.explicit_games:
                raise
            skipped[name] = str(exc)  # a default game the data cannot support (e.g. no impostor pair)
    return results, skipped


def _prepared(model: PreparedModel | str | Path, spec: Mapping[str, Any] | None) -> PreparedModel:
    if isinstance(model, PreparedModel):
        if spec is not None:
            raise InvalidRequest("spec", "is only used with a model path; a prepared model has its spec")
        return model
    loaded = load_model(model)
    return prepare(loaded, resolve_spec(loaded, dict(spec or {})))


def _plan(model: PreparedModel, data: Dataset, methods: Sequence[str] | None, games: Sequence[str] | None,
          options: Mapping[str, Any] | None) -> Plan:
    if options is not None and not isinstance(options, Mapping):
        raise InvalidRequest("options", f"expected a mapping of {', '.join(OPTION_KEYS)}, got {type(options).__name__}")
    options = dict(options or {})
    for key in options.keys() - set(OPTION_KEYS):
        raise InvalidRequest("options", f"unknown key {key!r}; keys: {', '.join(OPTION_KEYS)}")
    kind = model.spec.require("kind")
    quantised = quantised_operators(model.loaded.proto)  # white-box methods refuse quantised models
    cms_as_map = methods is not None and CMS in list(methods)
    if cms_as_map:
        methods = [m for m in methods if m != CMS]
    everything = methods is not None and list(methods) == [ALL]
    if methods is None:
        methods = [m for m in DEFAULT_METHODS if not quantised or get_method(m).black_box]
    elif everything:
        methods = [n for n, m in METHODS.items() if kind in m.kinds and (not quantised or m.black_box)]
    names = [m.name for m in _looked_up("methods", get_method, methods)]
    if not names and not cms_as_map:
        raise InvalidRequest("methods", "an audit needs at least one method")
    for name in names:
        if kind not in get_method(name).kinds:
            raise InvalidRequest("methods", f"{name} does not explain {kind} models")
        if quantised and not get_method(name).black_box:
            raise UnsupportedModel(f"{name} needs float operators; the model has quantised {', '.join(quantised)}: "
                                   f"use black-box methods ({', '.join(black_box_methods())})")
    method_options = _per_name(options.get("methods"), "methods", names)
    applicable = [g for g in games_for(kind) if why_not(g, kind, data) is None]
    if games is None:
        chosen = applicable
    else:
        chosen = [g.name for g in _looked_up("games", get_game, games)]
        for name in chosen:
            if name not in applicable:
                raise InvalidRequest("games", f"{name} cannot be played on this model and dataset "
                                              f"({why_not(name, kind, data)}); applicable: {', '.join(applicable) or 'none'}")
    game_options = _per_name(options.get("games"), "games", chosen)
    methods_options = {n: _options(f"options.methods.{n}", get_method(n).options, method_options.get(n))
                       for n in dict.fromkeys(names)}
    if not methods_options and "sanity_check" in chosen and "methods" not in game_options.get("sanity_check", {}):
        if games is not None:  # the CMS alone: there is no per-image method for the sanity check to randomise
            raise InvalidRequest("games", "sanity_check checks per-image methods; name one besides cms")
        chosen.remove("sanity_check")
    if "sanity_check" in chosen and "methods" not in game_options.get("sanity_check", {}):
        # Check the audit's own methods, with the audit's options for them, unless told otherwise.
        game_options["sanity_check"] = {**game_options.get("sanity_check", {}), "methods": tuple(methods_options),
                                        "method_options": methods_options}
    cms = options.get("cms")
    return Plan(
        cms=cms if isinstance(cms, CisOptions) else _options("options.cms", CisOptions, cms),
        methods=methods_options,
        games={n: _options(f"options.games.{n}", get_game(n).options, game_options.get(n)) for n in dict.fromkeys(chosen)},
        explicit_games=games is not None,
        explicit_methods=not everything,
        cms_as_map=cms_as_map,
    )


@contextmanager
def _named(prefix: str, options: Any) -> Iterator[None]:
    """An error about one of `options`' fields names it as the request does: "options.cms.stride", not
    "stride" (an audit's options hold every method's and game's); other errors pass unchanged."""
    try:
        yield
    except InvalidRequest as exc:
        fields = {f.name for f in dataclasses.fields(options)}
        if re.split(r"[.\[]", exc.field, maxsplit=1)[0] not in fields:
            raise
        raise InvalidRequest(f"{prefix}.{exc.field}", str(exc)[len(exc.field) + 2:]) from exc


def _looked_up(field: str, lookup: Callable[[str], Any], names: Sequence[str]) -> list[Any]:
    """Registry entries of `names`; an unknown name's error names the audit's field ("methods", "games"),
    not the registry's ("method", "game": right for Explain and Evaluate, which take one)."""
    try:
        return [lookup(name) for name in names]
    except InvalidRequest as exc:
        raise InvalidRequest(field, str(exc)[len(exc.field) + 2:]) from exc


def _options(prefix: str, options_type: type, given: Any) -> Any:
    """options_from, its errors (every one about `given`) named under `prefix`."""
    try:
        return options_from(options_type, given)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{prefix}.{exc.field}", str(exc)[len(exc.field) + 2:]) from exc


def _per_name(values: Any, field: str, names: list[str]) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidRequest(f"options.{field}", f"expected {{name: options}}, got {type(values).__name__}")
    for name in values:
        if name not in names:
            raise InvalidRequest(f"options.{field}", f"options given for {name!r}, which this audit does not run "
                                                     f"({', '.join(names)})")
    return dict(values)


def _cached(cache: MapCache, model: PreparedModel, method: str, options: Any, face: Face, compute: Any) -> SaliencyMap:
    target = face.cms_target if method == "cis" else face.target
    key = MapCache.key(model.loaded.sha256, model.spec.to_dict(), method, options,
                       [face.image, None if target.class_index is None else np.array([target.class_index]),
                        target.mate, target.non_mate, face.landmarks])
    return cache.get_or_compute(key, options, compute)


def _share_inside(values: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's positive mass inside the region (0 for a map with no positive mass)."""
    mass = positive_mass(values)
    return 0.0 if mass is None else float(mass[region].sum())


def _weighted_share(values: np.ndarray, weights: np.ndarray) -> float:
    mass = positive_mass(values)
    return 0.0 if mass is None else float((mass * weights).sum())


def _label(face: Face) -> Any:
    return face.entry.class_index if face.entry.class_index is not None else face.entry.identity


def _cms_target(model: PreparedModel) -> str:
    if model.spec.require("kind") == "classifier":
        return "each row's class"
    return "cosine to each row's mate (not contrastive)"


def _model_section(model: PreparedModel) -> dict[str, Any]:
    source = model.loaded.source
    return {"name": Path(source).name if source != "<bytes>" else "<bytes>", "path": source,
            "sha256": model.loaded.sha256, "kind": model.spec.require("kind"), "spec": model.spec.to_dict()}


def _notes(model: PreparedModel, data: Dataset) -> list[str]:
    notes = ["region_mass: share of a map's positive mass inside the ground-truth region (higher = more on the region)",
             "group_differences: one_minus_correlation = 1 − Pearson(CMS_a, CMS_b); l1 = Σ|p_a − p_b| with p the "
             "positive part of a CMS normalised to sum 1 (0 = same, 2 = disjoint)"]
    if not data.has_landmarks:
        notes.append("no landmarks: each crop is its own canonical frame (the CMS assumes aligned crops)")
    return notes + list(model.notes)


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _json_ready(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, ±inf) become null; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
