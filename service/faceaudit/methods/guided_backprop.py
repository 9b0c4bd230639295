"""Guided backpropagation: the gradient, passed back through each rectifier only where it is positive.

Math (Springenberg, Dosovitskiy, Brox, Riedmiller 2015 §3.4, fig. 1):
    at a rectifier with input x: R_x = [x > 0] · [R_y > 0] · R_y (LeakyRelu/PRelu: slope·R_y for
    x ≤ 0, still zero where R_y ≤ 0; Clip with min 0 as Relu inside its range); every other
    operator passes the exact gradient (captum's GuidedBackprop overrides only ReLU modules).
    S(x, y) = max_c |R(x, y, c)| at the pixels, preprocessing included as for `gradient`.
    Scores: as `gradient` (class score, softmax if the spec asks; cosine to the mate, minus the
    cosine to the non-mate when one is given).
Reference:
    Springenberg et al. Striving for simplicity: the all convolutional net. ICLR workshop 2015.
    Castañón et al. 2018 §IV-A: "guided backpropagation zeroes out all components either the
    feed-forward signal or the feedbackward signal are negative".
Defaults:
    reduce=max_abs, as `gradient` (Castañón et al. reduce all gradient-like signals this way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.methods.common import ExplainTarget, Progress
from faceaudit.methods.gradient import check_reduction, pixel_signal_map
from faceaudit.methods.saliency_map import SaliencyMap


@dataclass(frozen=True)
class GuidedBackpropOptions:
    """How the colour channels of the guided signal become one value per pixel (see gradient)."""

    reduce: str = "max_abs"

    def __post_init__(self) -> None:
        check_reduction(self.reduce)


def guided_backprop(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: GuidedBackpropOptions = GuidedBackpropOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Guided backpropagation map for a class or a mate (and non-mate)."""
    return pixel_signal_map("guided_backprop", "guided", model, image, target, options.reduce, options, progress)
