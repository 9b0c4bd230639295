"""Hand-made audit folders (audit.json + small .npy maps) in the faceaudit.audit/1 schema, for gate tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np


def point_map(shape: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    values = np.zeros(shape)
    values[at] = 1.0
    return values


DELETE = object()  # as a value in audit_data(**changes): remove the key


def audit_data(**changes: Any) -> dict[str, Any]:
    """A complete audit.json body; `changes` maps dotted paths to replacement values."""
    data: dict[str, Any] = {
        "schema": "faceaudit.audit/1", "faceaudit_version": "0.1.0", "created": "2026-11-25T00:00:00Z",
        "versions": {"onnxruntime": "1.20"},
        "model": {"name": "planted.onnx", "path": "/models/planted.onnx", "sha256": "ab" * 32, "kind": "classifier",
                  "spec": {}},
        "dataset": {"path": "/data", "manifest_sha256": "cd" * 32, "images": 8, "group_column": "group",
                    "groups": {"a": 4, "b": 4}},
        "options": {"seed": 0},
        "cms": {"overall": {"file": "maps/cms.npy", "images": 8},
                "groups": {"a": {"file": "maps/cms_a.npy", "images": 4}, "b": {"file": "maps/cms_b.npy", "images": 4}},
                "group_differences": {"a_vs_b": {"file": "maps/cms_a_vs_b.npy", "one_minus_correlation": 0.1,
                                                 "l1": 0.2}}},
        "methods": {"ebp": {"images": 8, "forward_passes": 8, "seconds": 0.1}},
        "games": {
            "hiding_game": {"game": "hiding_game", "x_label": "hidden fraction", "x": [0.0, 0.5],
                            "curves": {}, "options": {}, "forward_passes": 16, "notes": [],
                            "summary": {"ebp": {"auc_accuracy": 0.8}, "rise": {"auc_accuracy": 0.7},
                                        "random": {"auc_accuracy": 0.5}}},
            "deletion": {"game": "deletion", "x_label": "deleted fraction", "x": [], "curves": {}, "options": {},
                         "forward_passes": 16, "notes": [],
                         "summary": {"ebp": {"auc": 0.2}, "rise": {"auc": 0.3}}},
        },
    }
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def write_audit(folder: Path, data: dict[str, Any] | None = None, maps: dict[str, np.ndarray] | None = None) -> Path:
    """Write audit.json and the maps (file name relative to the folder -> values); default maps are
    a point mass at (4, 4) on a 16x16 grid for the CMS and one per group."""
    data = copy.deepcopy(data if data is not None else audit_data())
    default = {"maps/cms.npy": point_map((16, 16), (4, 4)), "maps/cms_a.npy": point_map((16, 16), (4, 4)),
               "maps/cms_b.npy": point_map((16, 16), (5, 4)), "maps/cms_a_vs_b.npy": np.zeros((16, 16))}
    default.update(maps or {})
    for name, values in default.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / name, values)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.json").write_text(json.dumps(data), encoding="utf-8")
    return folder / "audit.json"
