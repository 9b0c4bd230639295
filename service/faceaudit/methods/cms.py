"""CMS: Canonical Model Saliency, the mean CIS map of a model over a dataset.

Math (John et al., eq. 6):
    V = (1/N) Σ_i P_i            P_i the CIS map of image I_i on the canonical face
accumulated as a running float64 sum and a count, so 10,000 images need the memory of one map.
A CMS map reprojects onto any input face through that face's correspondence (the paper's Fig. 6d).
Reference:
    T. A. John, V. N. Balasubramanian, C. V. Jawahar. Canonical Saliency Maps: Decoding Deep Face
    Models. IEEE T-BIOM, 2021.
Defaults: those of CIS (`faceaudit.methods.cis.CisOptions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

import numpy as np

from faceaudit.alignment.correspondence import Correspondence
from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.cis import CisOptions, cis
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.saliency_map import SaliencyMap

# Fields every CIS map of one CMS must share.
_SHARED = ("model_sha256", "options", "signed")


class CmsAccumulator:
    """Running mean of CIS maps: one float64 sum, a count and the first map's metadata."""

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._count = 0
        self._first: dict[str, Any] = {}  # shared metadata of the first map
        self._target: dict[str, Any] | None = None  # the common target, None once they differ
        self._forward_passes = 0
        self._timings = {"total_s": 0.0, "runtime_s": 0.0}

    @property
    def count(self) -> int:
        return self._count

    def add(self, saliency_map: SaliencyMap) -> None:
        """Add one CIS map (same model, options and canonical shape as the maps before it)."""
        if saliency_map.method != "cis" or saliency_map.frame != "canonical":
            raise InvalidRequest("saliency_map", f"a CMS averages canonical CIS maps, not {saliency_map.method} "
                                                 f"maps on the {saliency_map.frame} frame")
        if self._sum is None:
            self._start(saliency_map)
        else:
            self._check_same(saliency_map)
        self._sum += saliency_map.values
        self._count += 1
        if self._target != saliency_map.target:
            self._target = None
        self._forward_passes += saliency_map.forward_passes
        for key in self._timings:
            self._timings[key] += saliency_map.timings.get(key, 0.0)

    def result(self) -> SaliencyMap:
        """V = sum / count, with the CIS options, the image count and the summed costs."""
        if self._sum is None:
            raise InvalidRequest("images", "a CMS map needs at least one image")
        first = self._first
        return SaliencyMap(
            values=self._sum / self._count,
            method="cms",
            options=first["options"],
            target=self._target if self._target is not None else {"per_image": True},
            model_sha256=first["model_sha256"],
            spec=first["spec"],
            seed=None,
            timings=dict(self._timings),
            forward_passes=self._forward_passes,
            frame="canonical",
            signed=first["signed"],
            extra={**first["extra"], "images": self._count},
        )

    def _start(self, saliency_map: SaliencyMap) -> None:
        self._sum = np.zeros(saliency_map.values.shape)
        self._target = saliency_map.target
        self._first = {name: getattr(saliency_map, name) for name in (*_SHARED, "spec")}
        self._first["extra"] = {key: saliency_map.extra[key] for key in ("provider", "batch") if key in saliency_map.extra}

    def _check_same(self, saliency_map: SaliencyMap) -> None:
        if saliency_map.values.shape != self._sum.shape:
            raise InvalidRequest("saliency_map", f"canonical shape {saliency_map.values.shape} differs from the "
                                                 f"first map's {self._sum.shape}")
        for name in _SHARED:
            if getattr(saliency_map, name) != self._first[name]:
                raise InvalidRequest("saliency_map", f"its {name} differs from the first map's: a CMS averages "
                                                     "maps of one model made with one set of options")


def cms(model: PreparedModel, *, images: Iterable[np.ndarray], targets: Iterable[ExplainTarget],
        correspondences: Iterable[Correspondence] | None = None, options: CisOptions = CisOptions(),
        progress: Progress | None = None) -> SaliencyMap:
    """The CMS map of `model` over images, each explained for its target (eq. 6).

    Inputs are consumed one at a time, so generators over a large dataset stream in constant
    memory. Without correspondences every image is its own canonical frame (`PreAligned`).
    `progress(done, total, "cms")` counts images; total is 0 when `images` has no length.
    """
    total = len(images) if isinstance(images, Sized) else 0
    accumulator = CmsAccumulator()
    for image, target, correspondence in _together(images, targets, correspondences):
        accumulator.add(cis(model, image=image, target=target, options=options, correspondence=correspondence))
        if progress is not None:
            progress(accumulator.count, total, "cms")
    return accumulator.result()


def reproject(cms_map: SaliencyMap, correspondence: Correspondence) -> np.ndarray:
    """A canonical map (CMS or CIS) drawn onto the input face of `correspondence`: (H_I, W_I) float32."""
    if cms_map.frame != "canonical":
        raise InvalidRequest("cms_map", f"only canonical maps reproject, this one is on the {cms_map.frame} frame")
    return correspondence.to_input(cms_map.values)


def _together(images: Iterable[np.ndarray], targets: Iterable[ExplainTarget],
              correspondences: Iterable[Correspondence] | None) -> Iterator[tuple[Any, Any, Any]]:
    """(image, target, correspondence) triples; InvalidRequest naming the input whose length differs."""
    end = object()
    others: dict[str, Iterator[Any]] = {"targets": iter(targets)}
    if correspondences is not None:
        others["correspondences"] = iter(correspondences)
    for image in images:
        items = {name: next(stream, end) for name, stream in others.items()}
        for name, item in items.items():
            if item is end:
                raise InvalidRequest(name, f"there are fewer {name} than images")
        yield image, items["targets"], items.get("correspondences")
    for name, stream in others.items():
        if next(stream, end) is not end:
            raise InvalidRequest(name, f"there are more {name} than images")
