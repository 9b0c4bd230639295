"""`--server HOST:PORT`: the CLI's commands run on a faceaudit server through faceaudit_client.

Shared by `faceaudit explain` and `faceaudit audit`: connection flags, the model (a local ONNX file
is uploaded with its spec; any other --model is a name on the server), flags that only apply
locally, and the remote audit. Reads local files; writes only what a command's --out asks for (the
remote audit replaces the map files an earlier audit left in OUT/maps, and nothing else there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from faceaudit.audit.report import REPORT, write_report
from faceaudit.cli.model_args import spec_values
from faceaudit.cli.progress import ProgressBar
from faceaudit.errors import InvalidRequest
from faceaudit.models.spec import canonical_names, read_spec_file
from faceaudit_client import Client, MissingMapFiles, ModelInfo, NotFound
from faceaudit_client.client import MAP_FILE, map_files


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("remote execution (a faceaudit server does the work)")
    group.add_argument("--server", metavar="HOST:PORT", help="run on this faceaudit server instead of locally")
    group.add_argument("--token-file", help="the server's bearer token (default: $FACEAUDIT_TOKEN, if set)")
    group.add_argument("--tls-root", help="PEM root certificates of a TLS server (default: plaintext)")
    group.add_argument("--timeout", type=float, help="seconds the remote call may take (default: no deadline)")


def connect(args: argparse.Namespace) -> Client:
    if ":" not in args.server or not args.server.rsplit(":", 1)[1].isdigit():
        raise InvalidRequest("server", f"{args.server!r} is not HOST:PORT")
    if args.timeout is not None and args.timeout <= 0:
        raise InvalidRequest("timeout", f"{args.timeout} must be positive")
    tls_root = None
    if args.tls_root:
        try:
            tls_root = Path(args.tls_root).read_bytes()
        except OSError as exc:
            raise InvalidRequest("tls_root", f"cannot read {args.tls_root}: {exc.strerror or exc}") from exc
    return Client(args.server, token=_token(args.token_file), tls_root=tls_root, timeout=args.timeout)


def _token(path: str | None) -> str | None:
    if not path:
        return os.environ.get("FACEAUDIT_TOKEN", "").strip() or None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest("token_file", f"cannot read {path}: {exc}") from exc
    if not token:
        raise InvalidRequest("token_file", f"{path} is empty")
    return token


# Runtime flags choose how this machine would run the model; the server has its own (faceaudit serve).
_LOCAL_ONLY = {"provider": "auto", "threads": None, "exact": False, "landmarks": None, "landmark_model": None}


def refuse_local_flags(args: argparse.Namespace, *, sent: tuple[str, ...] = ()) -> None:
    """Refuse the flags that only a local run reads; `sent` names those this command sends to the server."""
    for name, default in _LOCAL_ONLY.items():
        if name not in sent and getattr(args, name, default) != default:
            raise InvalidRequest(name, f"--{name.replace('_', '-')} applies to local runs; with --server the server "
                                       "decides (see faceaudit serve)")


def remote_model(client: Client, args: argparse.Namespace) -> ModelInfo:
    """--model as a local ONNX file (uploaded with its spec file and spec flags) or a name on the server."""
    flags = spec_values(args)
    path = Path(args.model)
    if path.is_file():
        if args.spec_file:  # --spec replaces the spec file next to the model, as locally
            spec = {**read_spec_file(args.spec_file), **canonical_names(flags)}
            return client.register_model(path.read_bytes(), path.stem, spec=spec)
        return client.register_model(path, spec=flags)
    if args.spec_file or flags:
        spec = {**(read_spec_file(args.spec_file) if args.spec_file else {}), **canonical_names(flags)}
        return client.register_from_repository(args.model, spec=spec)
    try:
        return client.get_model(args.model)
    except NotFound:  # not registered yet: a model of the server's repository folder
        return client.register_from_repository(args.model)


def progress_bar(args: argparse.Namespace, label: str) -> ProgressBar | None:
    return None if args.quiet else ProgressBar(label)


def audit_remotely(args: argparse.Namespace, methods: list[str] | None, games: list[str] | None,
                   options: dict[str, Any]) -> int:
    """`faceaudit audit --server`: --dataset names a folder of the server's --dataset-repository.

    Writes OUT/audit.json, the audit's map files (OUT/maps/, streamed back) and OUT/report.html.
    OUT/maps then holds this run's map files only, and the report shows only those: without every
    picture it lists (a server older than return_maps sends none) no report is written, and a warning
    says so.
    """
    from faceaudit.cli.explain import output_folder  # here: cli.explain imports this module

    refuse_local_flags(args)
    if args.model is None or args.dataset is None:
        raise InvalidRequest("model" if args.model is None else "dataset",
                             "with --server give --model and --dataset (a folder of the server's dataset repository)")
    if args.out is None:
        raise InvalidRequest("out", "give the output folder with --out")
    if args.manifest != "manifest.csv":
        raise InvalidRequest("manifest", "with --server the dataset folder's manifest.csv is used")
    out = output_folder(args.out)
    earlier = earlier_map_files(out)
    started = time.perf_counter()
    # This run's files arrive in a folder of their own and replace the earlier run's only once the audit
    # has succeeded: a failed or cancelled run leaves OUT as it was, a finished one leaves no stale map.
    with tempfile.TemporaryDirectory(prefix=".faceaudit-maps-", dir=out) as incoming:
        with connect(args) as client, warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingMapFiles)  # reported below, with what was done about it
            model = remote_model(client, args)
            summary = client.audit(model, args.dataset, methods=methods or (), games=games or (), options=options,
                                   group_column=args.group_column, out=incoming,
                                   progress=progress_bar(args, model.name))
        received = replace_map_files(out, Path(incoming), earlier)
    path = out / "audit.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    listed = map_files(summary)
    missing = sorted(listed - received)
    report = None
    if missing:
        (out / REPORT).unlink(missing_ok=True)  # an earlier run's report would pass for this run's
        print(f"warning: the server sent {len(listed) - len(missing)} of the {len(listed)} map files the audit "
              f"lists (missing: {missing[0]}{', ...' if len(missing) > 1 else ''}; a server older than "
              f"return_maps sends none): {REPORT}, which shows them, is not written; {path} holds every number",
              file=sys.stderr)
    else:
        report = write_report(path)
    seconds = time.perf_counter() - started
    brief = {"model": summary["model"]["name"], "images": summary["dataset"]["images"], "audit": str(path),
             "report": None if report is None else str(report), "missing_map_files": len(missing),
             "methods": {name: m.get("forward_passes") for name, m in summary.get("methods", {}).items()},
             "games": list(summary.get("games", {}))}
    if args.json:
        print(json.dumps({"seconds": round(seconds, 1), "server": args.server, "audits": [brief]}, indent=2))
        return 0
    print(f"{brief['model']}: {brief['images']} images (on {args.server})\n  audit:  {path}\n  report: "
          f"{report if report is not None else 'not written (map files missing)'}")
    for name, passes in brief["methods"].items():
        print(f"  {name}: {passes} forward passes")
    print(f"  games: {', '.join(brief['games']) or 'none'}")
    print(f"done in {seconds:.1f} s")
    return 0


def earlier_map_files(out: Path) -> list[Path]:
    """The map files an earlier audit left in OUT/maps (this run replaces them). Anything else there
    (another file, a link) is refused before any work: it is not ours to delete."""
    folder = out / "maps"
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or not folder.is_dir():
        raise InvalidRequest("out", f"{folder} is not a folder of an earlier audit's map files; this audit writes "
                                    "its maps there: move it away or choose another --out")
    found = []
    for root, folders, files in os.walk(folder):  # links to folders are listed, not followed
        for path in [Path(root, name) for name in folders + files]:
            if path.is_symlink() or (path.name in files and not MAP_FILE.fullmatch(path.relative_to(out).as_posix())):
                raise InvalidRequest("out", f"{path} is not a map file of an earlier audit; this audit replaces "
                                            f"{folder}: move it away or choose another --out")
        found += [Path(root, name) for name in files]
    return found


def replace_map_files(out: Path, incoming: Path, earlier: list[Path]) -> set[str]:
    """Remove the earlier run's map files, move this run's from `incoming` to OUT/maps; their maps/... paths."""
    folder = out / "maps"
    try:
        for path in earlier:
            path.unlink()
        if folder.is_dir():
            for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(Path(entry[0]).parts)):
                Path(root).rmdir()  # deepest first; fails if a file appeared meanwhile
        if (incoming / "maps").is_dir():
            (incoming / "maps").rename(folder)
    except OSError as exc:
        raise InvalidRequest("out", f"cannot replace the map files in {folder}: {exc.strerror or exc}") from exc
    return {p.relative_to(out).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()
