"""What every explanation method shares: the target, progress reporting, options, the result.

Every method is one function in its own file, named after the file, with one keyword-only
signature:

    def occlusion(model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
                  options: OcclusionOptions = OcclusionOptions(), progress: Progress | None = None
                  ) -> SaliencyMap

`image` is the model-sized float32 RGB image (H, W, 3) in [0, 255] (see faceaudit.images). Options
are frozen dataclasses whose defaults are the papers' defaults; `__post_init__` validates them
and raises InvalidRequest naming the option. Stochastic methods take `seed` in their options and
build their own numpy Generator: global random state is never touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, ScoringStats, embed
from faceaudit.errors import InvalidRequest, LimitExceeded
from faceaudit.images.io import check_image_array
from faceaudit.methods.saliency_map import SaliencyMap

# progress(done, total, phase): forward passes done so far out of total, and what is running.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ExplainTarget:
    """What to explain: a class of a classifier, or a probe's match to a mate (and non-mate).

    `mate` and `non_mate` are model-sized RGB images like the probe. With a non-mate the methods
    return the contrastive map: map against the mate minus map against the non-mate.
    """

    class_index: int | None = None
    mate: np.ndarray | None = field(default=None, repr=False)
    non_mate: np.ndarray | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        if self.class_index is not None:
            return {"class_index": int(self.class_index)}
        return {"mate": self.mate is not None, "non_mate": self.non_mate is not None}


def check_request(model: PreparedModel, image: np.ndarray, target: ExplainTarget) -> tuple[np.ndarray, ExplainTarget]:
    """Validate the probe image and the target against the model.

    Returns the image as float32 and the target with its images validated and converted, so that
    nothing downstream sees a caller's unchecked array.
    """
    spec = model.spec
    image = _model_sized(check_image_array(image, field="image"), spec, "image")
    kind = spec.require("kind")
    if kind == "classifier":
        if target.class_index is None or target.mate is not None or target.non_mate is not None:
            raise InvalidRequest("target", "a classifier is explained for a class index, not for mate/non-mate images")
        check_int("target", target.class_index, 0, model.output_size - 1, " (a class index of this model)")
        return image, ExplainTarget(class_index=int(target.class_index))
    if target.mate is None or target.class_index is not None:
        raise InvalidRequest("target", "an embedding model is explained against a mate image (and optionally a non-mate)")
    faces = {name: _model_sized(check_image_array(getattr(target, name), field=name), spec, name)
             for name in ("mate", "non_mate") if getattr(target, name) is not None}
    return image, ExplainTarget(**faces)


def _model_sized(image: np.ndarray, spec: Any, field_name: str) -> np.ndarray:
    expected = (spec.require("height"), spec.require("width"), 3)
    if image.shape != expected:
        raise InvalidRequest(field_name, f"expected a model-sized image of shape {expected}, got {image.shape}")
    return image


# Bounds that keep one request from exhausting the service: forward passes per map, and bytes of
# perturbed images alive per streamed chunk (the scorer's batch buffers are bounded separately).
MAX_FORWARD_PASSES = 1_000_000
CHUNK_BYTES = 16 << 20


def check_passes(name: str, passes: int) -> None:
    """LimitExceeded naming the option when a map would need more than MAX_FORWARD_PASSES."""
    if passes > MAX_FORWARD_PASSES:
        raise LimitExceeded(f"{name}: {passes:,} forward passes is above the limit of {MAX_FORWARD_PASSES:,}")


def chunk_size(requested: int, image: np.ndarray, copies: int = 1) -> int:
    """`requested` perturbations per chunk, lowered so a chunk of `copies` faces each fits CHUNK_BYTES."""
    per_item = image.shape[0] * image.shape[1] * 3 * 4 * copies
    return max(1, min(requested, CHUNK_BYTES // per_item))


def predicted_class(model: PreparedModel, image: np.ndarray) -> int:
    """The class a classifier predicts for a model-sized image (its highest output)."""
    return int(np.argmax(embed(model, image[None])[0]))


def references(model: PreparedModel, target: ExplainTarget) -> np.ndarray:
    """Embeddings (R, D) of the mate and, if given, the non-mate."""
    faces = [target.mate] + ([target.non_mate] if target.non_mate is not None else [])
    return embed(model, np.stack([np.asarray(f, dtype=np.float32) for f in faces]))


def scoring_target(model: PreparedModel, target: ExplainTarget) -> ClassTarget | EmbeddingTarget:
    """The scorer target: the class, or cosine to the mate (and non-mate) embeddings."""
    if target.class_index is not None:
        return ClassTarget(int(target.class_index))
    return EmbeddingTarget(references(model, target))


def contrast(scores: np.ndarray) -> np.ndarray:
    """Per-perturbation score: the only column, or mate column minus non-mate column."""
    return scores if scores.ndim == 1 else scores[:, 0] - scores[:, 1]


def check_int(name: str, value: int, low: int, high: int | None = None, why: str = "") -> None:
    """Raise InvalidRequest naming `name` unless value is an integer in [low, high] (bools are not)."""
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not integer or value < low or high is not None and value > high:
        allowed = f"an integer ≥ {low}" if high is None else f"an integer in {low}..{high}"
        raise InvalidRequest(name, f"{value!r} must be {allowed}{why}")


Options = TypeVar("Options")


def options_from(cls: type[Options], values: Mapping[str, Any] | None) -> Options:
    """Build an options dataclass from loose values (CLI, gRPC), naming unknown or ill-typed options."""
    if values is not None and not isinstance(values, Mapping):
        raise InvalidRequest("options", f"expected option names and values, got {type(values).__name__}")
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in values:
        if name not in known:
            raise InvalidRequest(name, f"unknown option for this method; options: {', '.join(sorted(known))}")
    return cls(**{name: _coerce(name, raw, str(known[name].type)) for name, raw in values.items()})


def _coerce(name: str, raw: Any, annotation: str) -> Any:
    """`raw` converted to the option's annotated type (values from the CLI arrive as strings)."""
    base = annotation.split("|")[0].strip()
    if raw is None and "None" in annotation:
        return raw
    if base == "str":
        if not isinstance(raw, str):
            raise InvalidRequest(name, f"{raw!r} is not text")
        return raw
    if base == "float" and not isinstance(raw, str):
        if isinstance(raw, bool) or not isinstance(raw, (int, float, np.integer, np.floating)):
            raise InvalidRequest(name, f"{raw!r} is not a number")
        return _finite(name, raw, float(raw))
    if base == "bool" and isinstance(raw, (bool, np.bool_)):
        return bool(raw)
    try:
        if base == "bool":
            if not isinstance(raw, str) or raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if base == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            as_float = float(raw)
            if as_float != int(as_float):
                raise ValueError(raw)
            return int(as_float)
        if base == "float":
            return _finite(name, raw, float(raw))
        if base == "tuple[float, ...]":
            return _finite(name, raw, tuple(float(v) for v in (raw.split(",") if isinstance(raw, str) else raw)))
        if base == "tuple[str, ...]":
            return tuple(str(v).strip() for v in (raw.split(",") if isinstance(raw, str) else raw))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(name, f"{raw!r} is not a valid {base}") from exc
    return raw


def _finite(name: str, raw: Any, value: Any) -> Any:
    """`value` if every number in it is finite: "nan" or "inf" is never a meaningful option."""
    if not np.all(np.isfinite(value)):
        raise InvalidRequest(name, f"{raw!r} is not a finite number")
    return value


def _dependence_warning(model: PreparedModel) -> dict[str, str]:
    if model.batch.dependent and model.session.max_batch > 1:
        return {"warning": "batch-dependent model run in batches: scores carry a deviation of up to "
                           f"{model.batch.relative_deviation:.2%}; run with exact=True for exact maps"}
    return {}


@dataclass
class Run:
    """Bookkeeping of one method run: timing, forward passes; builds the SaliencyMap."""

    method: str
    model: PreparedModel
    target: ExplainTarget
    options: Any
    started: float = field(default_factory=time.perf_counter)

    def result(self, values: np.ndarray, stats: ScoringStats | list[ScoringStats], *, frame: str = "input",
               signed: bool | None = None, extra: dict[str, Any] | None = None) -> SaliencyMap:
        all_stats = stats if isinstance(stats, list) else [stats]
        if not np.isfinite(values).all():
            raise ValueError(f"{self.method} produced a non-finite map")  # a bug, never user input
        options = dataclasses.asdict(self.options)
        return SaliencyMap(
            values=values,
            method=self.method,
            options=options,
            target=self.target.describe(),
            model_sha256=self.model.loaded.sha256,
            spec=self.model.spec.to_dict(),
            seed=options.get("seed"),
            timings={
                "total_s": time.perf_counter() - self.started,
                "runtime_s": sum(s.runtime_seconds for s in all_stats),
            },
            forward_passes=sum(s.images for s in all_stats),
            frame=frame,
            signed=self.target.non_mate is not None if signed is None else signed,
            extra={"provider": self.model.session.provider, "batch": self.model.batch.to_dict(),
                   "max_batch": self.model.session.max_batch, **_dependence_warning(self.model), **(extra or {})},
        )
