"""Reading an audit (audit.json and the map files next to it) for the gate; nothing is written.

An audit is addressed by its audit.json or by the folder holding it. Map files are read only from
inside that folder. A file that cannot be read or is not an audit is an InvalidRequest naming the
side ("baseline" / "candidate") and the key, so the gate exits 2 rather than judging garbage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.errors import InvalidRequest

__all__ = ["AUDIT_SCHEMA", "Audit", "load_audit"]

AUDIT_SCHEMA = "faceaudit.audit/1"
MAX_AUDIT_BYTES = 64 << 20


@dataclass(frozen=True)
class Audit:
    side: str  # "baseline" or "candidate": the field named in errors
    path: Path  # the audit.json
    data: dict[str, Any]

    def describe(self) -> str:
        """Model name and short hash, for report headers."""
        model = self.data.get("model") or {}
        return f"{model.get('name', '?')} (sha256 {str(model.get('sha256', '?'))[:12]})"

    def map(self, keys: tuple[str, ...]) -> np.ndarray:
        """The 2-D float map whose file the entry at `keys` (e.g. cms.overall) names."""
        field = ".".join((self.side, *keys, "file"))
        entry: Any = self.data
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(field, f"{self.path} names no map file here")
        folder = self.path.parent.resolve()
        file = (folder / name).resolve()
        if not file.is_relative_to(folder):
            raise InvalidRequest(field, f"map file {name!r} is outside the audit's folder {folder}")
        try:
            values = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidRequest(field, f"cannot read map {file}: {exc}") from exc
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
            raise InvalidRequest(field, f"{file} is not a finite 2-D map (shape {values.shape}, {values.dtype})")
        return values.astype(np.float64)


def load_audit(path: str | Path, side: str) -> Audit:
    """The audit at `path` (audit.json, or a folder with one), checked to be a faceaudit audit."""
    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    try:
        if path.stat().st_size > MAX_AUDIT_BYTES:
            raise InvalidRequest(side, f"{path} is larger than {MAX_AUDIT_BYTES >> 20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(side, f"cannot read an audit from {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != AUDIT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InvalidRequest(f"{side}.schema", f"{path} is not a {AUDIT_SCHEMA} audit (schema {found!r})")
    return Audit(side=side, path=path, data=data)
