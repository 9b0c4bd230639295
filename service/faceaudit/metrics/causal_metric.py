"""Deletion and insertion (Petsiuk et al.'s causal metrics): what deletion.py and insertion.py share.

Protocol (Petsiuk, Das, Saenko, BMVC 2018, §4.1; checked against the authors' evaluation.py,
`CausalMetric`, read, not run, and against a numpy port of it in the tests):
    deletion: start from the image and replace its most important pixels first (descending map
    value, ties in a seeded random order: metrics.ordering) with the baseline image,
    k_i = ⌊i·P/steps + ½⌋ pixels at step i = 0..steps; a faithful map makes the score fall fast
    (low area).
    insertion: start from the baseline and put the image's most important pixels back first; a
    faithful map makes the score rise fast (high area).
    Every method's maps and a uniform-random map per image (series "random", seeded) are played.
Baselines (option `baseline`; images are RGB in [0, 255], the model input x = (p·scale − mean)/std):
    input_zero    every pixel the colour whose model input is 0: mean/scale per model channel (RGB
                  order; mid-grey 127.5 for mean = std = 0.5, scale 1/255; black for mean 0).
                  Petsiuk's deletion substrate: their `torch.zeros_like` acts on the normalised
                  input tensor. The deletion default. NB it lies outside [0, 255] when the spec's
                  mean does; the model still sees exactly its zero input.
    zero          black pixels (0 in pixel space, model input −mean/std), as faceaudit's other
                  "zero" fills; the same as input_zero when the spec's mean is 0.
    petsiuk_blur  Petsiuk's insertion substrate: their conv2d of the normalised input with
                  gkern(11, blur_sigma), zero padding. gkern is scipy's gaussian_filter of an 11×11
                  unit impulse in its default reflect mode, which folds the Gaussian's tails beyond
                  the window back into it: for σ = 5 the kernel is nearly an 11×11 box (per-axis
                  std 3.13 px, not 5). Zero padding in model-input space is padding with the
                  input_zero colour in pixel space, so the border fades towards it (black for mean
                  0). The insertion default.
    blur          a Gaussian of blur_sigma px (scipy, kernel to 4σ, edges repeated:
                  engine.fills), a blur without Petsiuk's folded kernel and faded border.
Score (per image; see metrics.perturbation_curves): the true class's score of a classifier
    (softmax probability when spec.softmax, else the output; Petsiuk use the softmax probability
    of the top-1 class, the GameItem carries the true class: with `softmax: false` the curves are
    over logits, which the notes say), or cos(probe, mate) of an embedding model,
    cos(probe, mate) − cos(probe, non-mate) with non-mates (as methods.common.contrast).
Curves per series: mean_score over the images at each fraction x_i = k_i/P, and
    normalised_score = (mean_score − b)/(c − b), c the mean score of the clean images and b of
    the all-baseline images (both shared by every series: the curves' two ends).
Summary per series: auc, Petsiuk's area under the mean-score curve over x in [0, 1] (trapezoid;
    the mean of the per-image areas, since the area is linear), and auc_normalised, the same area
    of the normalised curve, = (auc − b)/(c − b). Why this normalisation: a logit, a probability,
    a cosine or a contrast (which can be negative) all map to one scale, clean = 1 and
    baseline = 0, so areas compare across models and score types (a CI gate compares two model
    versions); dividing each image's curve by its own clean score instead breaks down for scores
    near 0 or negative. It is one affine map shared by every series, so it never reorders methods.
    When the baseline scores as high as the clean images on average (c = b) it is undefined: the
    game refuses before playing any series (InvalidRequest on `baseline`).
Defaults:
    those of Petsiuk's evaluation code, so that their protocol is reproduced: steps=224 (224
    steps of 224 px on 224×224 images); baseline input_zero for deletion and petsiuk_blur for
    insertion; blur_sigma=5 px (their gkern(11, 5)); seed 0 (random maps and tie order); chunk 64
    images per streamed chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate, gaussian_filter

from faceaudit.engine.fills import baseline_image
from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import check_int
from faceaudit.metrics.common import GameItem, GameResult, PointSink, Progress, check_items
from faceaudit.metrics.ordering import curve_area, pixel_counts
from faceaudit.metrics.perturbation_curves import MAX_CHUNK, Plan, Values, check_faces, check_number, play
from faceaudit.models.spec import ModelSpec

BASELINES = ("input_zero", "zero", "petsiuk_blur", "blur")
PETSIUK_KERNEL_PX = 11  # klen of Petsiuk's gkern(klen, nsig)


@dataclass(frozen=True)
class CausalOptions:
    """Options of deletion and insertion; defaults and sources in the module docstring."""

    steps: int = 224  # steps from no pixel to every pixel taken (steps + 1 points), at most the pixel count
    baseline: str = "input_zero"  # what removed pixels become / insertion starts from: one of BASELINES
    blur_sigma: float = 5.0  # px, the Gaussian of the blur baselines (petsiuk_blur: gkern's nsig)
    seed: int = 0  # of the random baseline maps and of the tie order
    chunk: int = 64  # images per streamed chunk

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1, 1_000_000)
        if self.baseline not in BASELINES:
            raise InvalidRequest("baseline", f"{self.baseline!r} is not one of {', '.join(BASELINES)}")
        check_number("blur_sigma", self.blur_sigma, "a Gaussian sigma in (0, 1000] px", lambda v: 0 < v <= 1000)
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, MAX_CHUNK)


def causal_metric(
    model: PreparedModel, *, game: str, insert: bool, items: Sequence[GameItem], options: CausalOptions,
    on_point: PointSink | None, progress: Progress | None,
) -> GameResult:
    """Deletion (insert=False) or insertion (insert=True) over `items`, every method and the random baseline."""
    items = check_items(items)
    faces = check_faces(model, items, need_non_mate=False)
    height, width = faces.images[0].shape[:2]
    pixels = height * width
    if options.steps > pixels:
        raise InvalidRequest("steps", f"{options.steps} steps exceed the {pixels} pixels of a {height}×{width} image")
    baselines = [causal_baseline(image, options.baseline, options.blur_sigma, model.spec) for image in faces.images]
    counts = pixel_counts(np.arange(options.steps + 1) / options.steps, pixels)
    base, fill = (baselines, faces.images) if insert else (faces.images, baselines)
    plan = Plan(game, counts, descending=True, base=base, fill=fill, mask_sigma=None, tau=None,
                seed=options.seed, chunk=options.chunk)
    clean_count, baseline_count = (pixels, 0) if insert else (0, pixels)

    def normalised(ends: dict[int, float]) -> Values:
        clean, floor = ends[clean_count], ends[baseline_count]
        if not abs(clean - floor) > 1e-9 * max(1.0, abs(clean), abs(floor)):
            raise InvalidRequest("baseline", f"the {options.baseline} baseline scores {floor:.6g} on average, as "
                                             f"the clean images do ({clean:.6g}): no normalised area; try another")
        return lambda score, _: {"mean_score": score, "normalised_score": (score - floor) / (clean - floor)}

    played = play(model, faces, plan, values=normalised, on_point=on_point, progress=progress)
    clean, floor = played.ends[clean_count], played.ends[baseline_count]
    summary = {name: {"auc": curve_area(played.x, curve["mean_score"]),
                      "auc_normalised": curve_area(played.x, curve["normalised_score"])}
               for name, curve in played.curves.items()}
    better = "higher" if insert else "lower"
    notes = [f"{better} area is better; auc over x in [0, 1] (trapezoid), "
             f"auc_normalised = (auc − b)/(c − b) with c = {clean:.6g} the clean images' and "
             f"b = {floor:.6g} the {options.baseline} baseline's mean score",
             "pixels are taken most important first (descending map value; ties in a random order seeded by "
             "seed and the image's index, the same for every series)",
             "series 'random' ranks pixels by a uniform-random map per image (seeded)"]
    spec = model.spec
    if spec.kind == "classifier" and not spec.softmax and spec.output_type != "probabilities":
        notes.append("scores are the raw outputs (logits), where Petsiuk et al. use softmax probabilities: "
                     "set softmax in the spec to reproduce their curves")
    return GameResult(
        game=game, x_label=f"fraction of pixels {'inserted' if insert else 'deleted'} (most important first)",
        x=played.x, curves=played.curves, summary=summary, options=dataclasses.asdict(options),
        forward_passes=played.forward_passes, notes=notes,
    )


def causal_baseline(image: np.ndarray, baseline: str, blur_sigma: float, spec: ModelSpec) -> np.ndarray:
    """The (H, W, 3) float32 baseline image of `image` (module docstring, Baselines).

    The constant baselines are read-only views of one colour: no full-size copy per image.
    """
    if baseline in ("input_zero", "zero"):
        colour = input_zero_colour(spec) if baseline == "input_zero" else np.zeros(3)
        return np.broadcast_to(colour.astype(np.float32), image.shape)
    if baseline == "petsiuk_blur":
        # zero padding of the normalised input = padding each pixel channel with its input_zero value
        kernel = petsiuk_kernel(blur_sigma)
        colour = input_zero_colour(spec)
        return np.stack([correlate(image[..., c].astype(np.float64), kernel, mode="constant", cval=colour[c])
                         for c in range(3)], axis=-1).astype(np.float32)
    return baseline_image(image, "blur", blur_sigma=blur_sigma)


def input_zero_colour(spec: ModelSpec) -> np.ndarray:
    """The RGB colour (3,) float64 whose model input is 0 in every channel: mean/scale, in RGB order.

    A greyscale model sees the luma, whose weights sum to 1: a grey pixel of the value is seen as it.
    """
    zero = np.broadcast_to(np.asarray(spec.mean, dtype=np.float64) / spec.scale, spec.require("channels"))
    if len(zero) == 1:
        return np.repeat(zero, 3)
    return zero[::-1].copy() if spec.channel_order == "BGR" else zero.copy()


def petsiuk_kernel(sigma: float) -> np.ndarray:
    """Petsiuk's gkern(11, sigma): scipy's gaussian_filter of an 11×11 unit impulse, reflect mode (their code)."""
    impulse = np.zeros((PETSIUK_KERNEL_PX, PETSIUK_KERNEL_PX))
    impulse[PETSIUK_KERNEL_PX // 2, PETSIUK_KERNEL_PX // 2] = 1.0
    return gaussian_filter(impulse, sigma)
