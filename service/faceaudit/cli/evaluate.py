"""`faceaudit evaluate`: one evaluation game over a dataset, its curve points printed as they are computed.

    faceaudit evaluate --model M.onnx --dataset DIR --game GAME [--methods a,b|cms,...] [--option NAME.KEY=VALUE]
                       --out DIR [--server HOST:PORT]

The same run as `faceaudit audit --games GAME` (the methods' maps, then the game; audit.json and
report.html in --out), with every point of the game's curves printed on stdout as it is computed,
one line each (`--json`: one JSON object per line), and the game's summary table at the end.
With --server the game runs on the server (the Audit RPC: progress streams, the points arrive
with the result) and --dataset names a folder of the server's dataset repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from faceaudit.audit.dataset import load_dataset
from faceaudit.audit.report import write_report
from faceaudit.audit.run import run_audit
from faceaudit.cli.audit import parse_options, split_names
from faceaudit.cli.explain import output_folder
from faceaudit.cli.model_args import add_model_arguments, open_model
from faceaudit.cli.progress import ProgressBar
from faceaudit.cli.remote import add_remote_arguments, connect, progress_bar, refuse_local_flags, remote_model
from faceaudit.engine.prepare import prepare
from faceaudit.errors import InvalidRequest
from faceaudit.metrics.common import GamePoint
from faceaudit.metrics.registry import get_game


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, positional=False)
    parser.add_argument("--dataset", required=True, help="folder with the face images and manifest.csv")
    parser.add_argument("--manifest", default="manifest.csv", help="manifest file name inside the dataset folder")
    parser.add_argument("--group-column", help="manifest column holding the group attribute")
    parser.add_argument("--game", required=True, help="the game to play (hiding_game, deletion, confidence, ...)")
    parser.add_argument("--methods", help="comma-separated saliency methods whose maps are judged, 'all', and/or "
                                          "'cms' (default: gradient,occlusion)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE",
                        help="an option of a method, the game, or 'cms'; repeatable")
    parser.add_argument("--out", required=True, help="output folder (audit.json, report.html)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_remote_arguments(parser)


def cmd_evaluate(args: argparse.Namespace) -> int:
    game = get_game(args.game).name
    methods, options = split_names(args.methods, "methods"), parse_options(args.option)
    out = output_folder(args.out)
    if args.server is not None:
        result = _remotely(args, game, methods, options, out)
        for point in _points(game, result):
            _print_point(point, args.json)
    else:
        loaded, spec, runtime = open_model(args)
        model = prepare(loaded, spec, runtime)
        dataset = load_dataset(args.dataset, manifest=args.manifest, group_column=args.group_column)
        path = run_audit(model, dataset, out, methods=methods, games=[game], options=options,
                         progress=None if args.quiet else ProgressBar(Path(args.model).name),
                         on_point=lambda point: _print_point(point, args.json))
        write_report(path)
        result = json.loads(path.read_text(encoding="utf-8"))["games"][game]
    _print_summary(game, result, out, args.json)
    return 0


def _remotely(args: argparse.Namespace, game: str, methods: list[str] | None, options: dict[str, Any],
              out: Path) -> dict[str, Any]:
    refuse_local_flags(args)
    if args.manifest != "manifest.csv":
        raise InvalidRequest("manifest", "with --server the dataset folder's manifest.csv is used")
    with connect(args) as client:
        model = remote_model(client, args)
        summary = client.audit(model, args.dataset, methods=methods or (), games=[game], options=options,
                               group_column=args.group_column, progress=progress_bar(args, model.name))
    (out / "audit.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary["games"][game]


def _points(game: str, result: dict[str, Any]) -> list[GamePoint]:
    """A finished result's curves as the points a local run streams (series by series)."""
    return [GamePoint(game, series, i, float(x), {q: values[i] for q, values in curves.items() if i < len(values)})
            for series, curves in result.get("curves", {}).items() for i, x in enumerate(result.get("x", []))]


def _print_point(point: GamePoint, as_json: bool) -> None:
    if as_json:
        print(json.dumps(point.to_dict()), flush=True)
        return
    values = " ".join(f"{name}={value:.4g}" if isinstance(value, (int, float)) else f"{name}={value}"
                      for name, value in point.values.items())
    print(f"{point.game} {point.series} x={point.x:.4g} {values}", flush=True)


def _print_summary(game: str, result: dict[str, Any], out: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"game": game, "summary": result["summary"], "audit": str((out / "audit.json").resolve())}))
        return
    for series, numbers in result["summary"].items():
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in numbers.items()
                          if not isinstance(v, (dict, list)))
        print(f"{series}: {shown}")
    print(f"audit: {(out / 'audit.json').resolve()}", file=sys.stdout)
