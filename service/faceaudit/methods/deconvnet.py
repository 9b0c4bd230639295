"""Deconvnet: the gradient, with each rectifier applied to the backward signal instead of gated by the input.

Math (Zeiler & Fergus 2014 §2.1, "Rectification"):
    at a rectifier: R_x = relu(R_y), whatever the sign of the forward input x (LeakyRelu/PRelu:
    their own function of R_y; Clip with min 0: relu(R_y)); every other operator passes the exact
    gradient (the transposed filters of the deconvnet, and max-pooling "switches" that route the
    signal to each window's maximum, which is the gradient of MaxPool).
    S(x, y) = max_c |R(x, y, c)| at the pixels, preprocessing included as for `gradient`.
    Scores: as `gradient`.
Reference:
    Zeiler, Fergus. Visualizing and understanding convolutional networks. ECCV 2014.
    Castañón et al. 2018 §IV-A: "Deconvnets backpropagate only the positive components".
Defaults:
    reduce=max_abs, as `gradient`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.gradient import check_reduction, pixel_signal_map
from faceaudit.methods.saliency_map import SaliencyMap


@dataclass(frozen=True)
class DeconvnetOptions:
    """How the colour channels of the deconvnet signal become one value per pixel (see gradient)."""

    reduce: str = "max_abs"

    def __post_init__(self) -> None:
        check_reduction(self.reduce)


def deconvnet(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: DeconvnetOptions = DeconvnetOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Deconvnet map for a class or a mate (and non-mate)."""
    return pixel_signal_map("deconvnet", "deconv", model, image, target, options.reduce, options, progress)
