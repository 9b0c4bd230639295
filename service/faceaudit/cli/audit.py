"""`faceaudit audit`: a model-level audit over a dataset, or, with no arguments, the bundled demo.

    faceaudit audit --model M.onnx --dataset DIR [--group-column C] [--methods a,b|all] [--games x,y]
                    [--option NAME.KEY=VALUE ...] --out DIR
    faceaudit audit [--out DIR] [--methods ...] [--option ...]
                    the demo: renders demo faces, audits the bundled attribute and embedding models

Writes OUT/audit.json and OUT/report.html (the demo: OUT/attribute/ and OUT/embedding/, with the
rendered datasets under OUT/data/). `--option` sets an option of a method, a game or the CMS's
CIS maps ("cms"), e.g. `--option occlusion.patch=8 --option cms.stride=2`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from faceaudit.audit.dataset import load_dataset
from faceaudit.audit.report import write_report
from faceaudit.audit.run import run_audit
from faceaudit.cli.explain import output_folder
from faceaudit.cli.model_args import add_model_arguments, open_model
from faceaudit.cli.progress import ProgressBar
from faceaudit.cli.remote import add_remote_arguments, audit_remotely
from faceaudit.demo.dataset import write_attribute_dataset, write_embedding_dataset
from faceaudit.engine.prepare import prepare
from faceaudit.errors import InvalidRequest
from faceaudit.methods.registry import METHODS
from faceaudit.metrics.registry import GAMES, games_for, get_game

DEMO_OUT = "faceaudit-demo"
DEMO_MODELS = Path(__file__).resolve().parents[1] / "demo" / "models"
# CIS on the 64-px demo faces: the paper's 15-px patch at 112 px scaled to 64 px, half-patch stride.
# Games with coarser sweeps than their defaults, so that the demo takes seconds, not minutes.
# Inpainting τ: on the demo faces the embedding model's genuine cosines lie above 0.85 and its
# impostors' below 0.45 (demo/models/manifest.json: AUC 0.99999), so τ = 0.7 has FPR 0 and TPR 1
# there while refusing the doppelgangers, which the lowest τ at FPR 1 % (≈ 0.4) would still match.
DEMO_OPTIONS = {"cms": {"patch": 8, "stride": 4},
                "games": {"hiding_game": {"steps": 25}, "deletion": {"steps": 32}, "insertion": {"steps": 32},
                          "sanity_check": {"methods": "gradient", "every": 6}}}
DEMO_GAMES = {"embedding": {"inpainting_game": {"tau": 0.7, "steps": 50}}}
# A few methods of each family (gradients, CAM, excitation backprop, perturbation); `--methods all`
# runs every one on a dataset of your own.
# (The EBP family costs about a second per image on the embedding model: a fresh reference set per probe.)
DEMO_METHODS = {"attribute": ["gradient", "gradcam", "ebp", "lrp", "occlusion", "rise"],
                "embedding": ["gradient", "gradcam", "lrp", "occlusion", "xface"]}
DEMO_METHOD_OPTIONS = {"rise": {"masks": 500}}
DEMO_KINDS = {"attribute": "classifier", "embedding": "embedding"}


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, positional=False)
    for action in parser._actions:  # --model is optional here: without it the demo runs
        if action.dest == "model":
            action.required = False
            action.help = "path of the ONNX model (omit --model and --dataset to run the bundled demo)"
    parser.add_argument("--dataset", help="folder with the face images and manifest.csv")
    parser.add_argument("--manifest", default="manifest.csv", help="manifest file name inside the dataset folder")
    parser.add_argument("--group-column", help="manifest column holding the group attribute (default: 'group' if present)")
    parser.add_argument("--methods", help="comma-separated saliency methods, or 'all' (default: gradient,occlusion; "
                                          "the demo: a few of each family)")
    parser.add_argument("--games", help="comma-separated games (default: every game that applies)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="an option of a method, a game, or 'cms' (the CIS maps of the CMS); repeatable")
    parser.add_argument("--out", help=f"output folder (default: ./{DEMO_OUT} for the demo; required otherwise)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_remote_arguments(parser)  # --server: --dataset then names a folder of the server's dataset repository


def cmd_audit(args: argparse.Namespace) -> int:
    if args.server is not None:
        return audit_remotely(args, _names(args.methods, "methods"), _names(args.games, "games"), _options(args.option))
    if args.model is None and args.dataset is None:
        return _demo(args)
    if args.model is None or args.dataset is None:
        raise InvalidRequest("model" if args.model is None else "dataset", "give both --model and --dataset "
                                                                           "(or neither, for the demo)")
    if args.out is None:
        raise InvalidRequest("out", "give the output folder with --out")
    out = output_folder(args.out)
    loaded, spec, runtime = open_model(args)
    model = prepare(loaded, spec, runtime)
    started = time.perf_counter()
    dataset = load_dataset(args.dataset, manifest=args.manifest, group_column=args.group_column)
    path = run_audit(model, dataset, out, methods=_names(args.methods, "methods"), games=_names(args.games, "games"),
                     options=_options(args.option), progress=None if args.quiet else ProgressBar(Path(args.model).name))
    report = write_report(path)
    _print(args, [(path, report)], time.perf_counter() - started)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Render the demo datasets and audit the attribute classifier and the embedding model."""
    out = output_folder(args.out or DEMO_OUT)
    started = time.perf_counter()
    written = []
    for name, write, group in (("attribute", write_attribute_dataset, "skin"), ("embedding", write_embedding_dataset, None)):
        data = write(out / "data" / name)
        methods = _names(args.methods, "methods") or DEMO_METHODS[name]
        defaults = {**DEMO_OPTIONS, "games": {**DEMO_OPTIONS["games"], **DEMO_GAMES.get(name, {})},
                    "methods": {m: o for m, o in DEMO_METHOD_OPTIONS.items() if m in methods}}
        options = _options(args.option, defaults)
        # Both demo audits get the same --option flags: each keeps those of the games it plays.
        options["games"] = {g: o for g, o in options["games"].items() if g in games_for(DEMO_KINDS[name])}
        games = None if args.games is None else [g for g in _names(args.games, "games") or []
                                                 if get_game(g).name in games_for(DEMO_KINDS[name])]
        path = run_audit(DEMO_MODELS / f"{name}.onnx", data.parent, out / name, methods=methods, games=games,
                         options=options,
                         progress=None if args.quiet else ProgressBar(f"demo {name}"), group_column=group)
        written.append((path, write_report(path)))
    _print(args, written, time.perf_counter() - started)
    return 0


def _names(raw: str | None, field: str) -> list[str] | None:
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise InvalidRequest(field, f"{raw!r} names nothing")
    return names


def _options(items: list[str], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """--option NAME.KEY=VALUE as {"cms": {...}, "methods": {...}, "games": {...}}, over `defaults`."""
    defaults = defaults or {}
    options: dict[str, Any] = {"cms": dict(defaults.get("cms", {})), "methods": {}, "games": {}}
    for section in ("methods", "games"):
        options[section] = {name: dict(values) for name, values in defaults.get(section, {}).items()}
    for item in items:
        left, sep, value = item.partition("=")
        name, dot, key = left.strip().partition(".")
        if not sep or not dot or not name or not key:
            raise InvalidRequest("option", f"{item!r} is not NAME.KEY=VALUE")
        name = name.lower().replace("-", "_")
        if name == "cms":
            options["cms"][key] = value.strip()
        elif name in METHODS:
            options["methods"].setdefault(name, {})[key] = value.strip()
        elif name in GAMES:
            options["games"].setdefault(name, {})[key] = value.strip()
        else:
            raise InvalidRequest("option", f"{name!r} is not 'cms', a method or a game")
    return options


def _print(args: argparse.Namespace, written: list[tuple[Path, Path]], seconds: float) -> None:
    summaries = [_summary(path, report) for path, report in written]
    if args.json:
        print(json.dumps({"seconds": round(seconds, 1), "audits": summaries}, indent=2))
        return
    for summary in summaries:
        print(f"{summary['model']}: {summary['images']} images")
        print(f"  audit:  {summary['audit']}\n  report: {summary['report']}")
        if summary["cms_region_mass"] is not None:
            print(f"  CMS mass on the ground-truth region: {summary['cms_region_mass']:.1%}")
        for pair, difference in summary["group_differences"].items():
            print(f"  CMS {pair}: 1 - correlation {_fixed(difference['one_minus_correlation'])}, "
                  f"L1 of mass {_fixed(difference['l1'])}")
        for name, method in summary["methods"].items():
            region = f", mass on region {method['region_mass']:.1%}" if "region_mass" in method else ""
            print(f"  {name}: {method['forward_passes']} forward passes{region}")
        print(f"  games: {', '.join(summary['games']) or 'none'}")
    print(f"done in {seconds:.1f} s")


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary(path: Path, report: Path) -> dict[str, Any]:
    audit = json.loads(path.read_text(encoding="utf-8"))
    return {"model": audit["model"]["name"], "images": audit["dataset"]["images"], "audit": str(path.resolve()),
            "report": str(report.resolve()), "cms_region_mass": audit["cms"].get("region_mass"),
            "group_differences": audit["cms"]["group_differences"], "methods": audit["methods"],
            "games": list(audit["games"])}
