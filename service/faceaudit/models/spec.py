"""ModelSpec: how to feed a model and how to read it.

Each field has a *source*: ``inferred`` (the graph makes it unambiguous), ``given`` (the user set it
in a spec file, a flag or code), ``assumed`` (no graph can reveal it, so a documented default is
used and recorded in every result) or ``unknown`` (ambiguous; an operation that needs it fails with
an error naming the field and the flag that sets it).

Pixel convention: images are float RGB with values in [0, 255]. The model input is
``(pixel[channel_order] * scale - mean) / std`` in the model's layout; greyscale models get the
ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B), as Pillow's "L" conversion computes it.

The spec's numbers must give a usable model input in float32, the type the model is fed: mean, std
and scale each within float32's range, and (pixel · scale − mean) / std, computed as the
model input is (see `pixel_affine`), finite and not subnormal for every pixel in [0, 255] and
different for each of the 256 grey levels (a huge std or mean would otherwise feed every image as
one constant input, or overflow to inf and make any model return NaN).

Assumed defaults (no graph can reveal them): channel_order RGB, scale 1/255, mean 0, std 1, i.e. the
model sees [0, 1] RGB. Common alternatives: ArcFace/InsightFace exports use mean 127.5, std 128 with
scale 1; Caffe-era VGGFace uses BGR with scale 1 and mean (93.59, 104.76, 129.19) in BGR order.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from faceaudit.errors import InvalidRequest, SpecAmbiguous

Source = Literal["inferred", "given", "assumed", "unknown", "not applicable"]

KINDS = ("classifier", "embedding")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
OUTPUT_TYPES = ("logits", "probabilities")

# The flag (CLI) that sets each field; spec files use the field names themselves.
FLAGS: dict[str, str] = {
    "kind": "--kind",
    "input_name": "--input",
    "height": "--size HxW",
    "width": "--size HxW",
    "layout": "--layout",
    "channels": "--channels",
    "channel_order": "--channel-order",
    "scale": "--scale",
    "mean": "--mean",
    "std": "--std",
    "output_name": "--output",
    "output_type": "--output-type",
    "softmax": "--softmax",
}

ASSUMED_DEFAULTS: dict[str, Any] = {
    "channel_order": "RGB",
    "scale": 1.0 / 255.0,
    "mean": (0.0,),
    "std": (1.0,),
    "softmax": False,
}

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model input is computed in float32 (images.preprocess)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
GREY_LEVELS = np.arange(256, dtype=np.float32)  # the pixel values a model input must keep apart

# Spec files may name a model output and input by these short keys too.
_ALIASES = {"input": "input_name", "output": "output_name"}


@dataclass(frozen=True)
class ModelSpec:
    """How to feed and read one model. Build with `infer_spec` then `with_values`."""

    kind: str | None = None
    input_name: str | None = None
    height: int | None = None
    width: int | None = None
    layout: str | None = None
    channels: int | None = None
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    output_name: str | None = None
    output_type: str | None = None  # classifiers: what the output holds
    softmax: bool = False  # classifiers: score softmax(output) instead of the raw output
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        # Choices must be canonical (e.g. "NCHW", not "nchw"): code compares them by equality.
        for name in ("kind", "layout", "channel_order", "output_type", "channels"):
            value = getattr(self, name)
            if value is not None and _validate(name, value) != value:
                raise InvalidRequest(name, f"{value!r} is not one of the accepted values (use ModelSpec.with_values)")

    def require(self, name: str) -> Any:
        """The value of field `name`, or SpecAmbiguous naming the field and its flag."""
        value = getattr(self, name)
        if value is None:
            raise SpecAmbiguous(name, FLAGS[name], "the model graph does not determine it")
        return value

    def source(self, name: str) -> Source:
        if name not in self._applicable():
            return "not applicable"
        return self.sources.get(name, "unknown" if getattr(self, name) is None else "assumed")

    def assumed_fields(self) -> list[str]:
        return [f for f in self._applicable() if self.source(f) == "assumed"]

    def unknown_fields(self) -> dict[str, str]:
        """Fields no one has determined, with the flag that sets each."""
        return {f: FLAGS[f] for f in self._applicable() if self.source(f) == "unknown"}

    def _applicable(self) -> list[str]:
        classifier_only = ("output_type", "softmax")
        return [f for f in FLAGS if not (self.kind == "embedding" and f in classifier_only)]

    def with_values(self, values: Mapping[str, Any]) -> ModelSpec:
        """A copy with the user's values set (marked ``given``), validated and checked against the graph.

        A value that contradicts what the graph fixes (e.g. height 96 for an input fixed at 112)
        is refused rather than silently fed to a model that would then fail or mislead.
        """
        clean: dict[str, Any] = {}
        for name, raw in canonical_names(values).items():
            key = name
            if name not in FLAGS:
                raise InvalidRequest(key, f"unknown spec field; known fields: {', '.join(sorted(FLAGS))}")
            if raw is None:
                continue
            value = _validate(name, raw)
            if self.source(name) == "inferred" and getattr(self, name) != value and name not in ("kind", "output_type"):
                raise InvalidRequest(
                    name, f"given {value!r} but the model graph fixes it to {getattr(self, name)!r}"
                )
            clean[name] = value
        sources = dict(self.sources)
        sources.update({name: "given" for name in clean})
        spec = replace(self, **clean, sources=sources)
        spec._check_consistency()
        return spec

    def _check_consistency(self) -> None:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if self.channels is not None and len(values) not in (1, self.channels):
                raise InvalidRequest(name, f"has {len(values)} values for a {self.channels}-channel input")
        if self.softmax and self.output_type == "probabilities":
            raise InvalidRequest("softmax", "the output already holds probabilities; softmax applies to logits")
        self._check_input_range()

    def _check_input_range(self) -> None:
        """Refuse scale, mean and std whose float32 model input overflows or loses grey levels."""
        width = max(len(self.mean), len(self.std))
        mean = np.broadcast_to(np.asarray(self.mean, dtype=np.float64), width)
        std = np.broadcast_to(np.asarray(self.std, dtype=np.float64), width)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            a, b = (self.scale / std).astype(np.float32), (mean / std).astype(np.float32)
            for c in range(width):
                problem = _level_problem(GREY_LEVELS * a[c] - b[c])  # as images.preprocess computes it
                if problem is None:
                    continue
                # Blame the offset mean/std when pixel · scale/std alone is a good input, else that ratio.
                if _level_problem(GREY_LEVELS * a[c]) is None:
                    field = "mean"
                else:
                    field = "scale" if self.source("scale") == "given" and self.source("std") != "given" else "std"
                channel = f" (channel {c})" if width > 1 else ""
                raise InvalidRequest(field, f"the model input (pixel · scale − mean) / std with scale {self.scale:g}, "
                                            f"mean {mean[c]:g}, std {std[c]:g}{channel} {problem}")

    def to_dict(self) -> dict[str, Any]:
        """Field values with their sources, for JSON reports and result metadata."""
        return {
            f.name: {"value": list(v) if isinstance(v := getattr(self, f.name), tuple) else v, "source": self.source(f.name)}
            for f in fields(self)
            if f.name != "sources"
        }

    @functools.cached_property
    def pixel_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per model channel float32 (a, b) such that model_input = pixel * a - b (computed once)."""
        channels = self.require("channels")
        mean = np.broadcast_to(np.asarray(self.mean, dtype=np.float64), channels)
        std = np.broadcast_to(np.asarray(self.std, dtype=np.float64), channels)
        return (self.scale / std).astype(np.float32), (mean / std).astype(np.float32)


def _level_problem(levels: np.ndarray) -> str | None:
    """What is wrong with the float32 model inputs of the 256 grey levels, if anything."""
    if not np.isfinite(levels).all():
        return "overflows float32 for some pixels in [0, 255]"
    if ((levels != 0) & (np.abs(levels) < FLOAT32_TINY)).any():
        return "gives subnormal float32 values, which runtimes may flush to zero"
    distinct = len(np.unique(levels))
    if distinct < len(GREY_LEVELS):
        return f"maps the 256 grey levels to only {distinct} distinct float32 value{'s' * (distinct > 1)}"
    return None


def _validate(name: str, raw: Any) -> Any:
    choices = {"kind": KINDS, "layout": LAYOUTS, "channel_order": CHANNEL_ORDERS, "output_type": OUTPUT_TYPES}
    if name in choices:
        value = str(raw)
        value = value.upper() if name in ("layout", "channel_order") else value.lower()
        if value not in choices[name]:
            raise InvalidRequest(name, f"{raw!r} is not one of {', '.join(choices[name])}")
        return value
    if name in ("input_name", "output_name"):
        return str(raw)
    if name in ("height", "width"):
        value = _number(name, raw, int)
        if not 1 <= value <= 16384:
            raise InvalidRequest(name, f"{value} is outside 1..16384 pixels")
        return value
    if name == "channels":
        value = _number(name, raw, int)
        if value not in (1, 3):
            raise InvalidRequest(name, f"{value} is not 1 (greyscale) or 3 (colour)")
        return value
    if name == "softmax":
        if not isinstance(raw, bool):
            raise InvalidRequest(name, f"{raw!r} is not true or false")
        return raw
    if name == "scale":
        value = _number(name, raw, float)
        if not 0 < value <= FLOAT32_MAX:
            raise InvalidRequest(name, f"{value} must be a positive number within float32's range (≤ {FLOAT32_MAX:.3g})")
        return value
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    parsed = tuple(_number(name, v, float) for v in values)
    if len(parsed) not in (1, 3) or any(v != v or abs(v) == float("inf") for v in parsed):
        raise InvalidRequest(name, f"{raw!r} must be one finite number or three (per channel)")
    if name == "std" and any(v <= 0 for v in parsed):
        raise InvalidRequest(name, f"{raw!r} must be positive")
    if any(abs(v) > FLOAT32_MAX for v in parsed):
        raise InvalidRequest(name, f"{raw!r} lies beyond float32's range (±{FLOAT32_MAX:.3g})")
    return parsed


def _number(name: str, raw: Any, kind: type) -> Any:
    if isinstance(raw, bool):
        raise InvalidRequest(name, f"{raw!r} is not a number")
    try:
        value = kind(raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(name, f"{raw!r} is not a number") from exc
    if kind is int and float(raw) != value:
        raise InvalidRequest(name, f"{raw!r} is not an integer")
    return value


SPEC_SUFFIXES = (".spec.yaml", ".spec.yml", ".spec.json")


def spec_file_for(model_path: str | Path) -> Path | None:
    """The spec file next to a model (``face.onnx`` → ``face.spec.yaml|yml|json``), if one exists."""
    path = Path(model_path)
    for suffix in SPEC_SUFFIXES:
        candidate = path.with_name(path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The field values of a YAML or JSON spec file (validated later by `ModelSpec.with_values`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest("spec_file", f"cannot read {path} as a text file: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidRequest("spec_file", f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidRequest("spec_file", f"{path} must hold a mapping of field names to values")
    return canonical_names(data)


def canonical_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values keyed by field name, the short aliases ("input", "output") resolved."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = _ALIASES.get(key, key)
        if name in out:
            raise InvalidRequest(key, f"given twice, as {name!r} and as its alias")
        out[name] = value
    return out
