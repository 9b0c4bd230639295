"""The bundled demo end to end: demo faces → a faceaudit server in this process → faceaudit_client.

`run_demo(out)` renders the demo datasets, starts a FaceAuditServer on a free local port (the
bundled models as its --model-repository, the rendered datasets as its --dataset-repository) and
audits each demo model with every method of its kind (Audit RPC, methods=["all"]: a method that
refuses the model is listed in methods_skipped with its reason). Writes under `out` only:
    data/<model>/               the rendered dataset the server audits
    <model>/audit.json          what the Audit RPC returned
    <model>/maps/...            the CMS pictures and every face's maps, streamed back by the Audit RPC
    <model>/report.html         audit.report over that folder
    report.html, audit.json     the entry point: every model's ground-truth table, links (audit.demo_index)
    report.png                  the one-picture summary (audit.report_png)

Every number and every picture is the server's: the Audit RPC returns audit.json and, asked with
return_maps (`client.audit(..., out=...)`), the map files its report links.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from faceaudit.audit.demo_index import write_index
from faceaudit.audit.report import write_report
from faceaudit.demo.dataset import write_attribute_dataset, write_embedding_dataset, write_identity_dataset
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import Progress
from faceaudit.methods.registry import METHODS, get_method
from faceaudit.metrics.registry import games_for, get_game
from faceaudit.server.app import FaceAuditServer, ServerConfig
from faceaudit_client import Client

DEMO_MODELS = Path(__file__).resolve().parents[1] / "demo" / "models"


@dataclasses.dataclass(frozen=True)
class DemoModel:
    name: str  # demo/models/<name>.onnx and the dataset folder's name
    kind: str
    write: Callable[..., Path]  # writes the dataset: write(folder, <size keyword>=n)
    size_keyword: str
    group_column: str | None


MODELS = (DemoModel("attribute", "classifier", write_attribute_dataset, "identities", "skin"),
          DemoModel("identity", "classifier", write_identity_dataset, "faces", "skin"),
          DemoModel("embedding", "embedding", write_embedding_dataset, "quadruplets", None))


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big the demo is: dataset sizes, options of methods, games and CMS."""

    sizes: Mapping[str, int]  # demo model → identities (attribute: 2 faces each), faces (identity) or quadruplets
    cms: Mapping[str, Any]
    methods: Mapping[str, Mapping[str, Any]]
    games: Mapping[str, Mapping[str, Any]]


# CIS on the 64-px faces: the paper's 15-px patch at 112 px scaled to 64 px, half-patch stride.
# Sampling methods sized so that every method of the three models takes about two minutes on 2 cores
# (RISE's 1000 masks: fidelity ≈ 0.95 on these faces; LIME and KernelSHAP: 300 samples for 50
# segments). Inpainting τ = 0.7: the embedding model's genuine cosines on demo faces lie above
# 0.85, its impostors' below 0.45 (demo/models/manifest.json), and τ = 0.7 refuses the
# doppelgangers, which the lowest τ at FPR 1 % (≈ 0.4) would still match.
FULL = Profile(
    sizes={"attribute": 12, "identity": 10, "embedding": 12}, cms={"patch": 8, "stride": 4},
    methods={"rise": {"masks": 1000}, "corr_rise": {"masks": 1000}, "lime": {"samples": 300},
             "kernel_shap": {"samples": 300}, "smoothgrad": {"samples": 20}, "integrated_gradients": {"steps": 20}},
    games={"hiding_game": {"steps": 25}, "deletion": {"steps": 32}, "insertion": {"steps": 32},
           "sanity_check": {"methods": "gradient", "every": 6}, "inpainting_game": {"tau": 0.7, "steps": 50}},
)
# CI's smoke run: the same pipeline and every method, on four faces and two quadruplets with cheap sweeps.
FAST = Profile(
    sizes={"attribute": 2, "identity": 2, "embedding": 2}, cms={"patch": 16, "stride": 16},
    methods={"occlusion": {"patch": 16, "stride": 16}, "xface": {"patch": 16, "stride": 16},
             "cis": {"patch": 16, "stride": 16}, "rise": {"masks": 32}, "corr_rise": {"masks": 32},
             "lime": {"samples": 40, "segments": 12}, "kernel_shap": {"samples": 40, "segments": 12},
             "smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2}},
    games={"hiding_game": {"steps": 4}, "deletion": {"steps": 4}, "insertion": {"steps": 4},
           "sanity_check": {"methods": "gradient", "every": 12}, "inpainting_game": {"tau": 0.7, "steps": 4}},
)


def demo_options(profile: Profile, model: DemoModel, methods: list[str] | None,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Audit request's options for one demo model: the profile's, then `overrides` (the CLI's
    --option flags), keeping only the methods and games this model's audit runs."""
    overrides = overrides or {}
    runs = [m for m, entry in METHODS.items() if model.kind in entry.kinds] if methods is None else methods
    plays = games_for(model.kind)
    options: dict[str, Any] = {"cms": {**profile.cms, **overrides.get("cms", {})}, "methods": {}, "games": {}}
    for section, keep in (("methods", runs), ("games", plays)):
        for name in {**getattr(profile, section), **overrides.get(section, {})}:
            if name in keep:
                options[section][name] = {**getattr(profile, section).get(name, {}),
                                           **overrides.get(section, {}).get(name, {})}
    return options


def run_demo(out: str | Path, *, profile: Profile = FULL, methods: list[str] | None = None,
             games: list[str] | None = None, overrides: Mapping[str, Any] | None = None,
             progress: Callable[[str], Progress | None] = lambda label: None) -> Path:
    """Audit every demo model through an in-process server; returns the path of out/report.html.
    `methods` None: every method of each model's kind; `progress(label)` gives a callback per step."""
    out = Path(out)
    started = time.perf_counter()
    datasets = out / "data"
    for model in MODELS:
        model.write(datasets / model.name, **{model.size_keyword: profile.sizes[model.name]})
    server = FaceAuditServer(ServerConfig(host="127.0.0.1", port=0, model_repository=DEMO_MODELS,
                                          dataset_repository=datasets)).start()
    audits = {}
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            for model in MODELS:
                audits[model.name] = _audit(client, model, out, datasets / model.name, profile, methods, games,
                                            overrides, progress)
    finally:
        server.stop(0)
    return write_index(out, audits, seconds=time.perf_counter() - started)


def _audit(client: Client, model: DemoModel, out: Path, folder: Path, profile: Profile, methods: list[str] | None,
           games: list[str] | None, overrides: Mapping[str, Any] | None,
           progress: Callable[[str], Progress | None]) -> Path:
    """One model's Audit RPC with its map files, audit.json and report.html; the audit.json path."""
    info = client.register_from_repository(model.name)
    # Named methods and games: each model gets those that apply to its kind (the models share the flags).
    named = None if methods is None else [get_method(m).name for m in methods if model.kind in get_method(m).kinds]
    played = None if games is None else [get_game(g).name for g in games if get_game(g).name in games_for(model.kind)]
    for field, chosen in (("methods", named), ("games", played)):
        if chosen == []:
            raise InvalidRequest(field, f"none of those named applies to the demo's {model.kind} model")
    options = demo_options(profile, model, named, overrides)
    target = out / model.name
    summary = client.audit(info, model.name, methods=named or ["all"], games=played or (), options=options,
                           group_column=model.group_column, out=target, progress=progress(f"{model.name} audit"))
    summary["dataset"]["path"] = str(folder.resolve())
    path = target / "audit.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_report(path)
    return path
