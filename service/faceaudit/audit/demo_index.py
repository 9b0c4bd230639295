"""The demo's entry point: out/report.html, out/audit.json and out/report.png over the per-model audits.

report.html embeds report.png, shows each model's ground-truth table (audit.ground_truth) with its
skipped methods, and links each model's full report (<model>/report.html). audit.json (schema
"faceaudit.demo/1") names each model's audit.json and repeats its ground-truth rows. Reads the
audits; writes only those three files.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faceaudit
from faceaudit.audit.ground_truth import ground_truth
from faceaudit.audit.report import STYLE, format_number, html_table
from faceaudit.audit.report_png import write_png

SCHEMA = "faceaudit.demo/1"


def write_index(out: Path, audits: dict[str, Path], *, seconds: float) -> Path:
    """Write out/audit.json, out/report.png and out/report.html; returns the report.html path."""
    loaded = {name: json.loads(path.read_text(encoding="utf-8")) for name, path in audits.items()}
    tables = {name: ground_truth(audit) for name, audit in loaded.items()}
    index = {"schema": SCHEMA, "faceaudit_version": faceaudit.__version__,
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
             "audits": {name: path.relative_to(out).as_posix() for name, path in audits.items()},
             "ground_truth": tables}
    (out / "audit.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    picture = write_png(out / "report.png", {name: (loaded[name], audits[name].parent) for name in audits})
    parts = [f"<p>The bundled demo models audited through the faceaudit gRPC service in {seconds:.0f} s. "
             "Every number comes from the Audit RPC; the pictures from the Explain RPC.</p>",
             f"<img alt=\"summary\" style=\"max-width:100%\" src=\"data:image/png;base64,"
             f"{base64.b64encode(picture.read_bytes()).decode('ascii')}\">"]
    for name, audit in loaded.items():
        link = html.escape(audits[name].parent.relative_to(out).as_posix() + "/report.html")
        rows = [[r["method"], format_number(r["region_mass"]), format_number(r["pointing_hit_rate"]), format_number(r["inpainting_sr"]),
                 "" if r["skipped"] is None else f"skipped: {r['skipped']}"] for r in tables[name]]
        parts.append(f"<h2>{html.escape(audit['model']['name'])} ({html.escape(audit['model']['kind'])}, "
                     f"{audit['dataset']['images']} faces) — <a href=\"{link}\">full report</a></h2>"
                     f"<p>CMS mass on the planted part: <b>{format_number(audit['cms'].get('region_mass'))}</b></p>"
                     + html_table(["method", "mass on planted part", "pointing hit rate", "inpainting SR @ FAR 5 %", ""],
                              rows))
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>faceaudit demo report</title>"
                f"<style>{STYLE}</style></head><body>\n<h1>faceaudit demo report</h1>\n" + "\n".join(parts)
                + "\n</body></html>\n")
    path = out / "report.html"
    path.write_text(document, encoding="utf-8")
    return path


def demo_summary(out: Path) -> dict[str, Any]:
    """out/audit.json, parsed (the CLI prints from it)."""
    return json.loads((out / "audit.json").read_text(encoding="utf-8"))
