"""SmoothGrad: the gradient map averaged over noisy copies of the image.

Math (Smilkov, Thorat, Kim, Viégas, Wattenberg 2017, eq. 3):
    M̂(I) = 1/n Σ_{i=1..n} ∂s/∂I (I + ε_i),   ε_i ~ N(0, σ²),  σ = noise · (I_max − I_min)
    with the image range [0, 255], so σ = noise · 255 px. The map is then reduced over the colour
    channels as `gradient` reduces one gradient: max_c |M̂_c| (reduce=max_abs) or Σ_c M̂_c (sum).
    s as for `gradient` (class score, softmax under the spec; cosine to the mate, minus the cosine
    to the non-mate when one is given). Noisy copies are not clipped to [0, 255], as in the paper.
Computation:
    The n noisy copies run through the instrumented model and the backward engine `chunk` images
    at a time (one forward and one batched backward pass per chunk).
Reference:
    Smilkov et al. SmoothGrad: removing noise by adding noise. ICML workshop 2017. John et al.
    (survey) §2.1.
Defaults:
    samples=50 (Smilkov et al. §3.2: "the estimated gradient becomes smoother as n grows, with
    diminishing returns above n = 50"); noise=0.15 (§3.1: 10–20 % of the input range works best);
    reduce=max_abs (as `gradient`); seed=0; chunk=16 noisy copies per run (engineering). captum's
    NoiseTunnel(Saliency(f)).attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=σ_model)
    averages the raw gradients the same way when Saliency's abs=False (σ_model is σ in model-input
    units); with abs=True it averages |gradient| instead, which is not SmoothGrad's M̂.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import ExplainTarget, Progress, Run, check_int, check_request
from faceaudit.methods.gradient import check_reduction, instrument_for, pixel_gradients
from faceaudit.methods.saliency_map import SaliencyMap
from faceaudit.whitebox.compiled import engine_extra

MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class SmoothGradOptions:
    """Noisy copies, noise level as a fraction of the pixel range, channel reduction, seed, copies per run."""

    samples: int = 50
    noise: float = 0.15
    reduce: str = "max_abs"
    seed: int = 0
    chunk: int = 16

    def __post_init__(self) -> None:
        check_int("samples", self.samples, 1, MAX_SAMPLES)
        if not (isinstance(self.noise, (int, float)) and 0 <= self.noise <= 1):
            raise InvalidRequest("noise", f"{self.noise!r} must be a fraction of the pixel range in [0, 1]")
        check_reduction(self.reduce)
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, 256)


def smoothgrad(
    model: PreparedModel, *, image: np.ndarray, target: ExplainTarget,
    options: SmoothGradOptions = SmoothGradOptions(), progress: Progress | None = None,
) -> SaliencyMap:
    """Mean pixel gradient over `samples` noisy copies, reduced over colour channels."""
    run = Run("smoothgrad", model, target, options)
    image, target = check_request(model, image, target)
    wb = instrument_for(model, target)
    rng = np.random.default_rng(options.seed)
    sigma = options.noise * 255.0

    def noisy() -> Iterator[np.ndarray]:
        for start in range(0, options.samples, options.chunk):
            count = min(options.chunk, options.samples - start)
            yield (image + rng.normal(0.0, sigma, (count, *image.shape))).astype(np.float32)

    total = np.zeros(image.shape, dtype=np.float64)
    runs, done = [], 0
    for grads, _, found in pixel_gradients(model, wb, noisy(), target):
        total += grads.sum(axis=0)
        runs.append(found)
        done += len(grads)
        if progress is not None:
            progress(done, options.samples, "smoothgrad")
    mean = total / options.samples
    values = np.abs(mean).max(axis=-1) if options.reduce == "max_abs" else mean.sum(axis=-1)
    return run.result(values, [r.stats for r in runs], signed=options.reduce == "sum",
                      extra={"graph": "instrumented", "sigma_px": sigma, "folded_batch_norms": wb.folded_batch_norms,
                             **engine_extra(*runs)})
