"""SaliencyMap: the one return type of every explanation method, and how it is saved."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


PNG_MIN_SIDE = 224  # px: the overlay PNG of a smaller map is enlarged by a whole factor (the .npy is not)


@dataclass
class SaliencyMap:
    """An H×W float32 map plus everything needed to reproduce and judge it.

    `frame` is "input" for maps at the model's input resolution over the input face, "canonical"
    for maps over the canonical face (CIS, CMS). `signed` maps (contrastive ones: mate minus
    non-mate) are drawn with a diverging colormap centred on zero.
    """

    values: np.ndarray
    method: str
    options: dict[str, Any]
    target: dict[str, Any]
    model_sha256: str
    spec: dict[str, Any]  # ModelSpec.to_dict(): every field with its source (assumed ones included)
    seed: int | None
    timings: dict[str, float]  # seconds
    forward_passes: int  # of the perturbed or instrumented images; reference embeddings and the one-off shape
    # probes of building a compiled backward graph (the first map of a model and method) not counted
    frame: str = "input"
    signed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2:
            raise ValueError(f"a saliency map is H×W, got shape {self.values.shape}")

    def metadata(self) -> dict[str, Any]:
        meta = {k: v for k, v in asdict(self).items() if k != "values"}
        meta["shape"] = list(self.values.shape)
        return _jsonable(meta)

    def save(self, folder: str | Path, *, image: np.ndarray | None = None, stem: str | None = None,
             alpha: float = 0.5) -> dict[str, Path]:
        """Write `<stem>.npy`, `<stem>.json` and `<stem>.png` (the map over `image` if given)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = stem or self.method
        paths = {"npy": folder / f"{stem}.npy", "json": folder / f"{stem}.json", "png": folder / f"{stem}.png"}
        np.save(paths["npy"], self.values)
        paths["json"].write_text(json.dumps(self.metadata(), indent=2) + "\n", encoding="utf-8")
        picture = Image.fromarray(overlay(self.values, image, signed=self.signed, alpha=alpha))
        factor = -(-PNG_MIN_SIDE // min(self.values.shape))  # small maps are enlarged for viewing only
        if factor > 1:
            picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
        picture.save(paths["png"])
        return paths


def overlay(values: np.ndarray, image: np.ndarray | None = None, *, signed: bool = False,
            alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB picture of a map: a colormap (jet, or RdBu_r centred on 0 if signed) over the face."""
    from matplotlib import colormaps  # imported here: only saving needs matplotlib

    if signed:
        bound = float(np.abs(values).max()) or 1.0
        unit = (values / bound + 1.0) / 2.0
        colours = colormaps["RdBu_r"](unit)[..., :3]
    else:
        low, high = float(values.min()), float(values.max())
        unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
        colours = colormaps["jet"](unit)[..., :3]
    picture = colours * 255.0
    if image is not None:
        face = np.asarray(image, dtype=np.float64)
        if face.shape[:2] != values.shape:
            face = np.asarray(Image.fromarray(face.clip(0, 255).astype(np.uint8)).resize(values.shape[::-1], Image.BILINEAR))
        picture = alpha * picture + (1 - alpha) * face[..., :3]
    return picture.clip(0, 255).astype(np.uint8)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
