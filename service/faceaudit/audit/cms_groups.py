"""The CMS of a model overall and per group, and how the groups' maps differ.

Math:
    CMS_g = (1/N_g) Σ_{i in g} P_i          the mean canonical CIS map of group g (John et al., eq. 6)
    p(m)  = max(m, 0) / Σ max(m, 0)          a map's positive part as a distribution of mass (where
                                             occluding lowers the score: the evidence the model uses)
    difference map  D_ab = CMS_a − CMS_b     saved as maps/cms_diff_<a>_vs_<b>.npy
    one_minus_correlation = 1 − Pearson(CMS_a, CMS_b) over all pixels (null when a map is constant)
    l1 = Σ |p(CMS_a) − p(CMS_b)|             in [0, 2]: 0 same distribution, 2 disjoint (null when a
                                             map has no positive mass)
Groups are compared pairwise in order of first appearance in the manifest. Writes only the map
files it is asked to (under the given maps folder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceaudit.methods.cms import CmsAccumulator
from faceaudit.methods.saliency_map import PNG_MIN_SIDE, SaliencyMap, overlay


def positive_mass(values: np.ndarray) -> np.ndarray | None:
    """p(m): the positive part normalised to sum 1, or None when the map has no positive mass."""
    positive = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    total = positive.sum()
    return positive / total if total > 0 else None


def one_minus_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(1.0 - np.corrcoef(x, y)[0, 1])


def l1_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    pa, pb = positive_mass(a), positive_mass(b)
    return None if pa is None or pb is None else float(np.abs(pa - pb).sum())


def file_stems(values: list[str]) -> dict[str, str]:
    """A file-name-safe stem per group value, unique even when values differ only in odd characters."""
    stems: dict[str, str] = {}
    for value in values:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("._") or "group"
        candidate, k = stem, 2
        while candidate in stems.values():
            candidate, k = f"{stem}_{k}", k + 1
        stems[value] = candidate
    return stems


def save_map(values: np.ndarray, folder: Path, stem: str, backdrop: np.ndarray, *, signed: bool) -> Path:
    """Write <stem>.npy and <stem>.png, the map over `backdrop` (small maps enlarged, as SaliencyMap.save
    does); return the .npy path (the .png is beside it)."""
    path = folder / f"{stem}.npy"
    np.save(path, values.astype(np.float32))
    picture = Image.fromarray(overlay(values, backdrop, signed=signed))
    factor = max(1, -(-PNG_MIN_SIDE // min(values.shape)))
    picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST).save(path.with_suffix(".png"))
    return path


def cms_section(overall: CmsAccumulator, groups: dict[str, CmsAccumulator], folder: Path,
                backdrop: np.ndarray) -> tuple[dict[str, Any], dict[str, SaliencyMap]]:
    """audit.json's "cms" entry, writing the maps into `folder` (files named relative to its parent);
    also the CMS maps themselves, by "overall" and group value."""

    def save(values: np.ndarray, stem: str, *, signed: bool = False) -> str:
        return save_map(values, folder, stem, backdrop, signed=signed).relative_to(folder.parent).as_posix()

    maps = {"overall": overall.result()}
    section: dict[str, Any] = {"overall": {"file": save(maps["overall"].values, "cms"), "images": overall.count}}
    stems = file_stems(list(groups))
    section["groups"] = {}
    for value, accumulator in groups.items():
        maps[value] = accumulator.result()
        section["groups"][value] = {"file": save(maps[value].values, f"cms_{stems[value]}"), "images": accumulator.count}
    section["group_differences"] = {}
    values = list(groups)
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            first, second = maps[a].values, maps[b].values
            stem = f"cms_diff_{stems[a]}_vs_{stems[b]}"
            section["group_differences"][f"{a}_vs_{b}"] = {
                "file": save(first - second, stem, signed=True),
                "one_minus_correlation": one_minus_correlation(first, second),
                "l1": l1_distance(first, second),
            }
    return section, maps
