"""gweEBP's gradient-weighted responses (Wang et al. 2025 §2.3, eq. 6) for the numpy engine.

ã_j = â_j [g_j]⁺ where â_j ≥ 0 and â_j [−g_j]⁺ where â_j < 0, g = ∂G/∂a the gradient of the triplet
gain: a neuron is kept, scaled by |g|, where its gradient has its sign, and suppressed where the signs
differ (methods.gweebp explains the choice). whitebox.compiled emits the same weighting as ONNX nodes.

May touch: whitebox.backward (one gradient walk); nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from faceaudit.whitebox.backward import backward
from faceaudit.whitebox.dataflow import SignalGraph


def weigh(response: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Eq. 6 with the text's suppression: ã = â [g]⁺ where â ≥ 0, â [−g]⁺ where â < 0."""
    response = np.asarray(response, dtype=np.float64)
    return np.where(response >= 0, response * np.maximum(gradient, 0.0), response * np.maximum(-gradient, 0.0))


def gradient_weighted(graph: SignalGraph, values: Mapping[str, np.ndarray], gain_seed: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """ã for every activation between the model input (no neuron) and the score (the seed), both excluded,
    from the gradient of the gain seeded with ∂G/∂score."""
    gradients = backward(graph, values, gain_seed, "gradient", trace=True)
    skip = {graph.input_name, graph.score}
    return {name: weigh(values[name], g) for name, g in gradients.items() if name not in skip}
