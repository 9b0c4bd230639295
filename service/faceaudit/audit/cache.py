"""On-disk cache of per-image saliency maps, so that a restarted audit skips finished images.

An entry is keyed by the sha256 of everything the map depends on: the model's sha256 and spec
(preprocessing, output read), the method, its options, the model-sized image and target pixels,
and the correspondence (landmarks). Entries
are written to a temporary file and renamed, so a crash never leaves a half-written entry; an
unreadable entry is treated as missing and recomputed. Touches only files under its folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.methods.saliency_map import SaliencyMap

CACHE_VERSION = 1  # bump when what a key covers changes


class MapCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_sha256: str, spec: dict[str, Any], method: str, options: Any, arrays: list[np.ndarray | None]) -> str:
        """sha256 over the model and its spec, the method, its options (a dataclass) and the arrays
        (None marks an absent one)."""
        digest = hashlib.sha256()
        header = {"version": CACHE_VERSION, "model": model_sha256, "spec": spec, "method": method,
                  "options": dataclasses.asdict(options)}
        digest.update(json.dumps(header, sort_keys=True, default=str).encode())
        for array in arrays:
            if array is None:
                digest.update(b"\x00none")
            else:
                contiguous = np.ascontiguousarray(array)
                digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
                digest.update(contiguous.tobytes())
        return digest.hexdigest()

    def get_or_compute(self, key: str, options: Any, compute: Callable[[], SaliencyMap]) -> SaliencyMap:
        """The cached map of `key`, or `compute()`'s, stored under `key`."""
        path = self.folder / key[:2] / f"{key}.npz"
        cached = self._read(path, options)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        result = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with partial.open("wb") as handle:
            np.savez(handle, values=result.values, metadata=np.array(json.dumps(result.metadata())))
        os.replace(partial, path)
        return result

    @staticmethod
    def _read(path: Path, options: Any) -> SaliencyMap | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                values = data["values"]
                meta = json.loads(str(data["metadata"]))
            meta.pop("shape", None)
            # JSON turns tuples into lists: the options are the key's, so restore them as the run's own.
            meta["options"] = dataclasses.asdict(options)
            return SaliencyMap(values=values, **meta)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None  # a damaged entry is recomputed
