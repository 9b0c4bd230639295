"""One self-contained report.html from an audit folder (audit.json and the map PNGs next to it).

Every picture is embedded as a base64 PNG (map overlays written by the audit; curves drawn here
with matplotlib's object API, no pyplot global state), styles are inline, and nothing refers to
a network address, so the file opens offline. Reads the audit folder; writes only the report.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from faceaudit.audit.ground_truth import ground_truth
from faceaudit.errors import InvalidRequest

REPORT = "report.html"
SAMPLE_ROWS = 8  # images whose maps are shown
PER_IMAGE = "image"  # x label of games whose "curves" are per-image values, not a sweep: not drawn
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.3em;text-align:center}figcaption{font-size:.8em;color:#555}
img.map{width:160px;image-rendering:pixelated}code{background:#f3f3f3;padding:0 .2em}.note{color:#555;font-size:.9em}
"""


def write_report(audit_json: str | Path, *, sample_rows: int = SAMPLE_ROWS) -> Path:
    """Write report.html next to `audit_json`; returns its path."""
    path = Path(audit_json)
    try:
        audit = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest("audit", f"cannot read {path} as an audit.json ({exc})") from exc
    root = path.parent
    parts = [_header(audit), _cms(audit, root), _methods(audit), _ground_truth(audit),
             _samples(audit, root, sample_rows), _games(audit, maps=True), _games(audit, maps=False), _notes(audit)]
    title = html.escape(f"faceaudit report: {audit['model']['name']}")
    document = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
                f"<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n" + "\n".join(parts) + "\n</body></html>\n")
    out = root / REPORT
    out.write_text(document, encoding="utf-8")
    return out


def _header(audit: dict[str, Any]) -> str:
    model, data = audit["model"], audit["dataset"]
    rows = [("model", model["path"]), ("sha256", model["sha256"]), ("kind", model["kind"]),
            ("dataset", data["path"]), ("images", data["images"]), ("group column", data["group_column"] or "none"),
            ("groups", ", ".join(f"{k}: {v}" for k, v in data["groups"].items()) or "none"),
            ("created", audit["created"]), ("faceaudit", audit["faceaudit_version"]),
            ("versions", ", ".join(f"{k} {v}" for k, v in audit["versions"].items()))]
    return "<h2>Audit</h2>" + html_table(["", ""], [[k, v] for k, v in rows], show_header=False)


def _cms(audit: dict[str, Any], root: Path) -> str:
    cms = audit["cms"]
    figures = [_figure(root, cms["overall"]["file"], f"overall ({cms['overall']['images']} images)")]
    figures += [_figure(root, g["file"], f"{value} ({g['images']} images)") for value, g in cms["groups"].items()]
    text = (f"<h2>Canonical model saliency (CMS)</h2><p class=\"note\">Mean CIS map on the {html.escape(cms['frame'])} "
            f"frame; target: {html.escape(cms['target'])}. Red = occluding there lowers the score most.</p>"
            + "".join(figures))
    if "region_mass" in cms:
        text += f"<p>Share of the CMS's positive mass on the ground-truth region: <b>{format_number(cms['region_mass'])}</b></p>"
    if cms["group_differences"]:
        rows = [[pair, format_number(d["one_minus_correlation"]), format_number(d["l1"])] for pair, d in cms["group_differences"].items()]
        text += ("<h3>Differences between groups</h3>" + html_table(["groups", "1 − correlation", "L1 of mass"], rows)
                 + "".join(_figure(root, d["file"], f"{pair} (red: more in the first)")
                           for pair, d in cms["group_differences"].items()))
    return text


def _methods(audit: dict[str, Any]) -> str:
    methods = audit["methods"]
    with_regions = any("region_mass" in m for m in methods.values())
    header = ["method", "images", "forward passes", "seconds"] + (["mass on region"] if with_regions else [])
    rows = [[name, m["images"], m["forward_passes"], format_number(m["seconds"])] + ([format_number(m.get("region_mass"))] if with_regions else [])
            for name, m in methods.items()]
    return "<h2>Methods</h2>" + html_table(header, rows)


def _samples(audit: dict[str, Any], root: Path, count: int) -> str:
    rows = []  # an audit from the Audit RPC has local map files only for the images it fetched
    for image in [i for i in audit["images"] if i["files"]][:count]:
        caption = f"{image['name']} · label {image['label']}" + (f" · {image['group']}" if image["group"] is not None else "")
        figures = [_figure(root, image["files"]["image"], caption)]
        figures += [_figure(root, files["png"], method) for method, files in image["files"].items() if method != "image"]
        rows.append(f"<div>{''.join(figures)}</div>")
    return f"<h2>Maps of the first {len(rows)} images</h2>" + "".join(rows)


def _ground_truth(audit: dict[str, Any]) -> str:
    """Per method: map mass on the region, pointing-game hit rate, inpainting SR at FAR 5 % (where played)."""
    if "region_mass" not in audit["cms"]:
        return ""
    rows = [["CMS", format_number(audit["cms"]["region_mass"]), "", "", ""]]
    rows += [[r["method"], format_number(r["region_mass"]), format_number(r["pointing_hit_rate"]), format_number(r["inpainting_sr"]),
              "" if r["skipped"] is None else f"skipped: {r['skipped']}"] for r in ground_truth(audit)]
    return ("<h2>Ground truth</h2><p class=\"note\">Against the dataset's region masks: share of the map's positive "
            "mass on the region, pointing-game hit rate (maximum within the game's tolerance of the region: "
            "compare with the random row), inpainting-game success rate at 5 % false alarms (— where not played).</p>"
            + html_table(["method", "mass on region", "pointing hit rate", "inpainting SR @ FAR 5 %", ""], rows))


def _games(audit: dict[str, Any], *, maps: bool) -> str:
    played = {name: game for name, game in audit["games"].items() if game.get("judges_maps", True) == maps}
    parts = ["<h2>Games</h2>" if maps else "<h2>Feature analyses</h2>"]
    if not played:
        if not maps:
            return ""
        parts.append("<p>No game was played.</p>")
    for name, reason in (audit.get("games_skipped", {}).items() if maps else ()):
        parts.append(f"<p class=\"note\">{html.escape(name)} not played: {html.escape(reason)}</p>")
    for name, game in played.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        quantities = sorted({q for series in game["summary"].values() for q in series})
        rows = [[series] + [format_number(values.get(q)) for q in quantities] for series, values in game["summary"].items()]
        parts.append(html_table(["series", *quantities], rows))
        if game["x"] and game["curves"] and game["x_label"] != PER_IMAGE:
            parts.append(f"<img alt=\"{html.escape(name)} curves\" src=\"data:image/png;base64,{_curves(game)}\">")
        parts += [f"<p class=\"note\">{html.escape(note)}</p>" for note in game.get("notes", [])]
    return "".join(parts)


def _notes(audit: dict[str, Any]) -> str:
    return "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in audit.get("notes", [])) + "</ul>"


def _curves(game: dict[str, Any]) -> str:
    """The game's curves as a base64 PNG: one panel per quantity, one line per series."""
    from matplotlib.figure import Figure  # imported here: only reports need matplotlib

    quantities = sorted({q for curves in game["curves"].values() for q in curves})
    figure = Figure(figsize=(4.2 * len(quantities), 3.2), dpi=90)
    for k, quantity in enumerate(quantities, start=1):
        axes = figure.add_subplot(1, len(quantities), k)
        for series, curves in game["curves"].items():
            if quantity in curves:
                values = [float("nan") if v is None else v for v in curves[quantity]]
                axes.plot(game["x"][:len(values)], values, label=series, linestyle="--" if series == "random" else "-")
        axes.set_xlabel(game["x_label"])
        axes.set_title(quantity)
    axes.legend(fontsize=6, ncol=1 + len(game["curves"]) // 12)  # one legend: the panels share their series
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(root: Path, relative: str, caption: str) -> str:
    png = (root / relative).with_suffix(".png")
    try:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
    except OSError as exc:
        raise InvalidRequest("audit", f"the audit folder lacks {png.name} ({exc})") from exc
    text = html.escape(caption)
    return (f"<figure><img class=\"map\" alt=\"{text}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{text}</figcaption></figure>")


def html_table(columns: list[str], rows: list[list[Any]], *, show_header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in columns) + "</tr>" if show_header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def format_number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
