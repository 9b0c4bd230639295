"""One PNG summarising audits (the demo's report.png; the README shows a copy as docs/demo-report.png,
regenerated with `faceaudit audit && cp faceaudit-report/report.png docs/demo-report.png`).

Per audit, a row: the first sample face, the CMS, and that face's maps by a few methods (the map
PNGs the audit folder holds). Then the ground truth of every method of every audit as bars (share
of map mass on the planted part; inpainting SR at FAR 5 % where played) and the last audit's
hiding-game curve. Drawn with matplotlib's object API (no pyplot global state); reads the audit
folders, writes only `path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceaudit.audit.ground_truth import ground_truth

SHOWN = ("gradient", "gradcam", "lrp", "ebp", "xface", "rise", "occlusion")  # first five present are drawn
PER_ROW = 5
CURVES = ("gradient", "gradcam", "lrp", "rise", "xface", "random")
DPI = 72


def write_png(path: Path, audits: dict[str, tuple[dict[str, Any], Path]]) -> Path:
    """`audits`: name → (parsed audit.json, its folder). Returns `path`."""
    from matplotlib.figure import Figure  # imported here: only reports need matplotlib

    names = list(audits)
    columns = 2 + PER_ROW
    figure = Figure(figsize=(1.6 * columns, 1.8 * len(names) + 4.6), dpi=DPI)
    grid = figure.add_gridspec(len(names) + 1, columns, height_ratios=[1.0] * len(names) + [2.4])
    for r, name in enumerate(names):
        audit, folder = audits[name]
        shown = [image for image in audit["images"] if image["files"]]
        # A face of class 1 first (the demo attribute model's planted cue), else the first face with maps.
        sample = next((image for image in shown if image.get("label") == 1), shown[0] if shown else None)
        panels = [("CMS", audit["cms"]["overall"]["file"])]
        if sample is not None:
            methods = [m for m in SHOWN if m in sample["files"]][:PER_ROW]
            panels = [(f"{name}: face", sample["files"]["image"])] + panels + [(m, sample["files"][m]["png"])
                                                                            for m in methods]
        for c, (title, relative) in enumerate(panels):
            axes = figure.add_subplot(grid[r, c])
            axes.imshow(np.asarray(Image.open((folder / relative).with_suffix(".png")).convert("RGB")))
            axes.set_title(title, fontsize=8)
            axes.axis("off")
    _ground_truth_bars(figure.add_subplot(grid[len(names), :4]), {n: audits[n][0] for n in names})
    _hiding_curve(figure.add_subplot(grid[len(names), 4:]), names[-1], audits[names[-1]][0])
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _ground_truth_bars(axes: Any, audits: dict[str, dict[str, Any]]) -> None:
    labels, mass, inpainting = [], [], []
    for name, audit in audits.items():
        for row in ground_truth(audit):
            if row["region_mass"] is None and row["inpainting_sr"] is None:
                continue
            labels.append(f"{name}: {row['method']}" + (" (skipped)" if row["skipped"] else ""))
            mass.append(row["region_mass"] or 0.0)
            inpainting.append(np.nan if row["inpainting_sr"] is None else row["inpainting_sr"])
    y = np.arange(len(labels))
    axes.barh(y - 0.2, mass, height=0.4, label="map mass on planted part")
    axes.barh(y + 0.2, inpainting, height=0.4, label="inpainting SR @ FAR 5 %")
    axes.set_yticks(y, labels, fontsize=5)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_title("ground truth (higher = map on the planted part)", fontsize=8)
    axes.legend(fontsize=6, loc="lower right")
    axes.tick_params(axis="x", labelsize=6)


def _hiding_curve(axes: Any, name: str, audit: dict[str, Any]) -> None:
    game = audit["games"].get("hiding_game")
    axes.set_title(f"{name}: hiding game", fontsize=8)
    if game is None:
        axes.text(0.5, 0.5, "not played", ha="center")
        return
    quantity = sorted({q for curves in game["curves"].values() for q in curves})[-1]
    for series in CURVES:
        values = game["curves"].get(series, {}).get(quantity)
        if values is not None:
            axes.plot(game["x"][:len(values)], [np.nan if v is None else v for v in values], label=series,
                      linestyle="--" if series == "random" else "-")
    axes.set_xlabel(game["x_label"], fontsize=6)
    axes.set_ylabel(quantity, fontsize=6)
    axes.tick_params(labelsize=6)
    axes.legend(fontsize=6)
