"""Landmarks from a landmark model supplied as ONNX, then dense piecewise-affine alignment.

The model maps a face image to K×2 coordinates, run by faceaudit's engine (`Scorer` with
`OutputTarget`). Their layout and units are declared by the caller, never guessed:
- order "xy": (x_0, y_0, x_1, y_1, ...); "planar": (x_0, ..., x_{K-1}, y_0, ..., y_{K-1});
- units "normalized": fractions u of the model input's extent, x = u · W - 0.5 in pixel-centre
  coordinates (u = 0 and u = 1 are the outer edges); "pixels": pixel-centre coordinates of
  the model's input.
Images are resized to the model's input size (`fit_to_model`) and the points scaled back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from faceaudit.alignment.correspondence import Correspondence
from faceaudit.alignment.landmarks import LandmarkAligner
from faceaudit.engine.prepare import PreparedModel, prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.engine.scorer import OutputTarget, Scorer
from faceaudit.errors import InvalidRequest
from faceaudit.images.io import check_image_array, fit_to_model
from faceaudit.models import load_model, resolve_spec

UNITS = ("normalized", "pixels")
ORDERS = ("xy", "planar")


class OnnxLandmarkAligner:
    """Aligner whose per-image landmarks come from an ONNX landmark model."""

    def __init__(self, model: PreparedModel, aligner: LandmarkAligner, *, units: str, order: str = "xy") -> None:
        if units not in UNITS:
            raise InvalidRequest("units", f"{units!r} is not one of {', '.join(UNITS)}: declare the landmark model's units")
        if order not in ORDERS:
            raise InvalidRequest("order", f"{order!r} is not one of {', '.join(ORDERS)}")
        count = len(aligner.template)
        if model.output_size != 2 * count:
            raise InvalidRequest("landmark_model", f"its output has {model.output_size} values per image; the "
                                                   f"template's {count} points need {2 * count}")
        self.model = model
        self.aligner = aligner
        self.units = units
        self.order = order

    @classmethod
    def load(cls, source: str | os.PathLike[str] | bytes, aligner: LandmarkAligner, *, units: str, order: str = "xy",
             spec: Mapping[str, Any] | None = None, runtime: RuntimeOptions = RuntimeOptions()) -> OnnxLandmarkAligner:
        """Load, resolve and prepare a landmark model (its raw output is read: no kind needed)."""
        loaded = load_model(source)
        return cls(prepare(loaded, resolve_spec(loaded, spec), runtime), aligner, units=units, order=order)

    def landmarks(self, images: np.ndarray) -> np.ndarray:
        """Landmarks (B, K, 2) of images (B, H, W, 3) in [0, 255], in the images' pixel coordinates."""
        spec = self.model.spec
        if np.ndim(images) != 4:
            raise InvalidRequest("images", f"expected a (B, H, W, 3) batch, got shape {np.shape(images)}")
        faces = [check_image_array(image, field="images") for image in images]
        raw = Scorer(self.model, OutputTarget()).score(fit_to_model(face, spec)[None] for face in faces)
        count = len(self.aligner.template)
        points = raw.reshape(-1, 2, count).transpose(0, 2, 1) if self.order == "planar" else raw.reshape(-1, count, 2)
        points = points.astype(np.float64)
        if self.units == "pixels":
            points = (points + 0.5) / np.array([spec.require("width"), spec.require("height")])
        height, width = np.shape(images)[1:3]
        return points * np.array([width, height]) - 0.5

    def correspond(self, image: np.ndarray) -> Correspondence:
        """The correspondence of one image (H, W, 3) through its predicted landmarks."""
        return self.aligner.correspond(image, self.landmarks(np.asarray(image)[None])[0])
