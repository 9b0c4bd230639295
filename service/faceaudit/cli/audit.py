"""`faceaudit audit`: a model-level audit over a dataset, or, with no arguments, the bundled demo.

    faceaudit audit --model M.onnx --dataset DIR [--group-column C] [--methods a,b|all] [--games x,y]
                    [--option NAME.KEY=VALUE ...] --out DIR
    faceaudit audit [--out DIR] [--fast] [--methods ...] [--games ...] [--option ...]
                    the demo: renders demo faces, starts a faceaudit server in this process and
                    audits the bundled attribute, identity and embedding models through the Python client
                    with every method of their kind (audit.demo; --fast: CI's short run)

Writes OUT/audit.json and OUT/report.html. The demo (OUT = ./faceaudit-report) writes the entry
point OUT/report.html with OUT/audit.json and OUT/report.png, over OUT/attribute/ and
OUT/embedding/ (each with its audit.json and report.html) and the rendered datasets in OUT/data/.
`--option` sets an option of a method, a game or the CMS's CIS maps ("cms"), e.g.
`--option occlusion.patch=8 --option cms.stride=2`; the demo's go to each model that runs them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from faceaudit.audit.dataset import load_dataset
from faceaudit.audit.demo import FAST, FULL, run_demo
from faceaudit.audit.demo_index import demo_summary
from faceaudit.audit.report import write_report
from faceaudit.audit.run import run_audit
from faceaudit.cli.explain import output_folder
from faceaudit.cli.model_args import add_model_arguments, open_model
from faceaudit.cli.progress import ProgressBar
from faceaudit.cli.remote import add_remote_arguments, audit_remotely
from faceaudit.engine.prepare import prepare
from faceaudit.errors import InvalidRequest
from faceaudit.methods.registry import METHODS
from faceaudit.metrics.registry import GAMES

DEMO_OUT = "faceaudit-report"


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, positional=False, required=False,
                        model_help="path of the ONNX model (omit --model and --dataset to run the bundled demo)")
    parser.add_argument("--dataset", help="folder with the face images and manifest.csv")
    parser.add_argument("--manifest", default="manifest.csv", help="manifest file name inside the dataset folder")
    parser.add_argument("--group-column", help="manifest column holding the group attribute (default: 'group' if present)")
    parser.add_argument("--methods", help="comma-separated saliency methods, or 'all' (default: gradient,occlusion; "
                                          "the demo: every method of each model's kind)")
    parser.add_argument("--games", help="comma-separated games (default: every game that applies)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="an option of a method, a game, or 'cms' (the CIS maps of the CMS); repeatable")
    parser.add_argument("--out", help=f"output folder (default: ./{DEMO_OUT} for the demo; required otherwise)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--fast", action="store_true", help="the demo on a few faces per model with cheap options "
                                                            "(every method still runs; what CI runs)")
    add_remote_arguments(parser)  # --server: --dataset then names a folder of the server's dataset repository


def cmd_audit(args: argparse.Namespace) -> int:
    if args.server is not None:
        return audit_remotely(args, split_names(args.methods, "methods"), split_names(args.games, "games"), parse_options(args.option))
    if args.model is None and args.dataset is None:
        return _demo(args)
    if args.fast:
        raise InvalidRequest("fast", "--fast sizes the demo; it applies without --model and --dataset")
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
    path = run_audit(model, dataset, out, methods=split_names(args.methods, "methods"), games=split_names(args.games, "games"),
                     options=parse_options(args.option), progress=None if args.quiet else ProgressBar(Path(args.model).name))
    report = write_report(path)
    _print(args, [(path, report)], time.perf_counter() - started)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The bundled demo through an in-process server and the Python client (audit.demo)."""
    out = output_folder(args.out or DEMO_OUT)
    report = run_demo(out, profile=FAST if args.fast else FULL, methods=split_names(args.methods, "methods"),
                      games=split_names(args.games, "games"), overrides=parse_options(args.option),
                      progress=lambda label: None if args.quiet else ProgressBar(label))
    index = demo_summary(out)
    if args.json:
        print(json.dumps({**index, "report": str(report.resolve())}, indent=2))
        return 0
    for name, rows in index["ground_truth"].items():
        print(f"{name}: {out / index['audits'][name]}")
        for row in rows:
            if row["skipped"] is not None:
                print(f"  {row['method']}: skipped ({row['skipped']})")
            else:
                print(f"  {row['method']}: mass on planted part {_fixed(row['region_mass'])}, pointing hit rate "
                      f"{_fixed(row['pointing_hit_rate'])}, inpainting SR @ FAR 5 % {_fixed(row['inpainting_sr'])}")
    print(f"report: {report.resolve()}\ndone in {index['seconds']:.1f} s")
    return 0


def split_names(raw: str | None, field: str) -> list[str] | None:
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names:
        raise InvalidRequest(field, f"{raw!r} names nothing")
    return names


def parse_options(items: list[str]) -> dict[str, Any]:
    """--option NAME.KEY=VALUE as {"cms": {...}, "methods": {...}, "games": {...}}."""
    options: dict[str, Any] = {"cms": {}, "methods": {}, "games": {}}
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
