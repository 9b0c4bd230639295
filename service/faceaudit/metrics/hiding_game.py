"""The hiding game: hide the least important pixels first; does the model still get the face right?

Protocol (Castanon & Byrne 2018, §IV-C; Wang et al. 2025, §3.1 for embedding networks):
    for each fraction f of the steps, hide the ⌊f·P + ½⌋ least important pixels of every image by
    its map's order (metrics.ordering: ascending map value, ties in a seeded random order),
    replace them with the fill, and score the dataset. Every method's maps are played, and a uniform-random map
    per image (seeded) as the baseline series "random", as in the paper's Fig. 5.
Fills (option `fill`):
    zero              hidden pixels become black.
    dataset_mean      hidden pixels become the dataset's mean colour (hard mask).
    soft_dataset_mean the mean colour through a soft mask: the hard 0/1 hide mask blurred by a
                      Gaussian, image' = I·(1 − S) + c·S. The paper's best fill and the classifier
                      default. The paper gives no sigma for this blur; we take the Gaussian it
                      smooths maps with (§III: σ = 2 % of the image width, 4.5 px at 224 px), so
                      `mask_sigma` defaults to 0.02·W px.
    non_mate          (embedding models; their default, Wang §3.1) hidden probe pixels are taken
                      from the non-mate, pushing the probe towards it: with every pixel hidden the
                      probe is the non-mate.
    The dataset mean colour is `dataset_mean` when given (the paper uses the training set's), else
    the mean colour of the game's own images.
Reported per step (curves), for each series:
    classifier: accuracy = fraction of images still classified as their true class (argmax),
    mean_score = mean true-class score (softmax probability when spec.softmax, else the output).
    embedding: tpr = fraction of probes still matched to the mate: cos(probe, mate) >
    cos(probe, non-mate), or cos(probe, mate) ≥ τ when `tau` is given; mean_score = mean of
    cos(probe, mate) − cos(probe, non-mate) (cos(probe, mate) without non-mates).
    Every image counts: the curve starts at the clean accuracy / TPR (Wang keep only probes matched
    at the start; filter the items to do the same).
Summary, per series: auc_accuracy (or auc_tpr) and auc_mean_score, the trapezoid area under the
    curve over the fraction hidden divided by the fraction range (ordering.curve_area): a rate's
    area is in [0, 1], 1 for a curve that never drops.
Defaults:
    fractions 0, 1 %, …, 99 % (steps=100, max_fraction=0.99: the paper hides up to 99 %, issue 5
    asks for 1 % steps); fill soft_dataset_mean (classifiers) / non_mate (embeddings); seed 0;
    chunk 64 images per streamed chunk.
Reference:
    D. Castanon, J. Byrne, "Visualizing and quantifying discriminative features for face
    recognition", IEEE FG 2018. Y. Wang et al., "Gradient-weighted extended excitation
    back-propagation for embedding networks", 2025.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from faceaudit.engine.prepare import PreparedModel
from faceaudit.errors import InvalidRequest
from faceaudit.methods.common import check_int
from faceaudit.metrics.common import GameItem, GameResult, PointSink, Progress, check_items
from faceaudit.metrics.ordering import curve_area, pixel_counts
from faceaudit.metrics.perturbation_curves import MAX_CHUNK, Plan, check_faces, check_number, is_number, play

FILLS = ("zero", "dataset_mean", "soft_dataset_mean", "non_mate")
MASK_SIGMA_OF_WIDTH = 0.02  # Castanon & Byrne §III: their smoothing Gaussian, 2 % of the image width


@dataclass(frozen=True)
class HidingGameOptions:
    """Hiding game options; defaults and their sources in the module docstring."""

    steps: int = 100  # fractions hidden: `steps` evenly spaced values from 0 to max_fraction
    max_fraction: float = 0.99  # the last fraction hidden, in (0, 1]; the game refuses one that rounds to 0 pixels
    fill: str | None = None  # one of FILLS; None: soft_dataset_mean for classifiers, non_mate for embeddings
    dataset_mean: tuple[float, ...] | None = None  # fill colour (RGB or grey, 0..255); None: the images' mean colour
    mask_sigma: float | None = None  # px, the soft mask's Gaussian; None: 2 % of the image width
    tau: float | None = None  # embeddings: a match is cos(probe, mate) ≥ tau; None: closer to mate than non-mate
    seed: int = 0  # of the random baseline maps
    chunk: int = 64  # images per streamed chunk

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 2, 10_000)
        check_number("max_fraction", self.max_fraction, "a fraction in (0, 1]", lambda v: 0 < v <= 1)
        if self.fill is not None and self.fill not in FILLS:
            raise InvalidRequest("fill", f"{self.fill!r} is not one of {', '.join(FILLS)}")
        if self.dataset_mean is not None:
            colour = self.dataset_mean
            if not isinstance(colour, tuple) or len(colour) not in (1, 3) or not all(
                    is_number(c) and 0 <= c <= 255 for c in colour):
                raise InvalidRequest("dataset_mean", f"{colour!r} must be one value or three, each in [0, 255]")
            if self.fill not in (None, "dataset_mean", "soft_dataset_mean"):
                raise InvalidRequest("dataset_mean", f"is only used by the dataset_mean fills, not {self.fill!r}")
        if self.mask_sigma is not None:
            check_number("mask_sigma", self.mask_sigma, "a Gaussian sigma in (0, 1000] px", lambda v: 0 < v <= 1000)
            if self.fill not in (None, "soft_dataset_mean"):
                raise InvalidRequest("mask_sigma", f"is only used by the soft_dataset_mean fill, not {self.fill!r}")
        if self.tau is not None:
            check_number("tau", self.tau, "a cosine threshold in [-1, 1]", lambda v: -1 <= v <= 1)
        check_int("seed", self.seed, 0)
        check_int("chunk", self.chunk, 1, MAX_CHUNK)


def hiding_game(
    model: PreparedModel, *, items: Sequence[GameItem], options: HidingGameOptions = HidingGameOptions(),
    on_point: PointSink | None = None, progress: Progress | None = None,
) -> GameResult:
    """Play the hiding game over `items` for every method's maps and the random baseline."""
    items = check_items(items)
    classifier = model.spec.require("kind") == "classifier"
    fill = _resolved_fill(options, classifier)
    faces = check_faces(model, items, need_non_mate=not classifier and (fill == "non_mate" or options.tau is None))
    height, width = faces.images[0].shape[:2]
    fractions = np.linspace(0.0, options.max_fraction, options.steps)
    counts = pixel_counts(fractions, height * width)
    if counts[-1] == 0:  # every step would hide nothing: a curve over no x range, refused before any pass
        raise InvalidRequest("max_fraction", f"{options.max_fraction} of the {height * width} pixels rounds to none: "
                                             f"hide at least 1/{2 * height * width} of them")
    colour = None
    if fill in ("dataset_mean", "soft_dataset_mean"):
        colour = np.broadcast_to(np.asarray(options.dataset_mean, dtype=np.float64) if options.dataset_mean is not None
                                 else np.mean([image.reshape(-1, 3).mean(axis=0) for image in faces.images], axis=0), 3)
    if fill == "non_mate":
        fills = faces.non_mates
    else:  # one read-only constant image shared by every probe
        constant = (np.zeros(3) if colour is None else colour).astype(np.float32)
        fills = [np.broadcast_to(constant, faces.images[0].shape)] * len(faces.images)
    sigma = (options.mask_sigma or MASK_SIGMA_OF_WIDTH * width) if fill == "soft_dataset_mean" else None
    success = "accuracy" if classifier else "tpr"
    plan = Plan("hiding_game", counts, descending=False, base=faces.images,
                fill=fills, mask_sigma=sigma, tau=options.tau,  # type: ignore[arg-type]
                seed=options.seed, chunk=options.chunk)
    played = play(model, faces, plan, on_point=on_point, progress=progress,
                  values=lambda ends: lambda score, rate: {success: rate, "mean_score": score})
    summary = {name: {f"auc_{success}": curve_area(played.x, curve[success]),
                      "auc_mean_score": curve_area(played.x, curve["mean_score"])}
               for name, curve in played.curves.items()}
    resolved = {**dataclasses.asdict(options), "fill": fill, "mask_sigma": sigma,
                "dataset_mean": None if colour is None else [float(c) for c in colour]}
    return GameResult(
        game="hiding_game", x_label="fraction of pixels hidden (least important first)", x=played.x,
        curves=played.curves, summary=summary, options=resolved, forward_passes=played.forward_passes,
        notes=_notes(classifier, fill, options.tau),
    )


def _resolved_fill(options: HidingGameOptions, classifier: bool) -> str:
    """The fill to play (the default for the model kind when unset), refusing options that do not fit it."""
    fill = options.fill or ("soft_dataset_mean" if classifier else "non_mate")
    if classifier and fill == "non_mate":
        raise InvalidRequest("fill", "non_mate fills an embedding model's probe; a classifier has no non-mate")
    if classifier and options.tau is not None:
        raise InvalidRequest("tau", "is a cosine threshold for embedding models; a classifier is scored by argmax")
    if options.dataset_mean is not None and fill not in ("dataset_mean", "soft_dataset_mean"):
        raise InvalidRequest("dataset_mean", f"is only used by the dataset_mean fills, not {fill!r}")
    if options.mask_sigma is not None and fill != "soft_dataset_mean":
        raise InvalidRequest("mask_sigma", f"is only used by the soft_dataset_mean fill, not {fill!r}")
    return fill


def _notes(classifier: bool, fill: str, tau: float | None) -> list[str]:
    notes = ["pixels are hidden least important first (ascending map value; ties in a random order seeded by "
             "seed and the image's index, the same for every series); "
             "x is the fraction of pixels actually hidden, ⌊f·P + ½⌋ / P",
             "areas are trapezoid areas divided by the x range: "
             "higher means the map kept the pixels that matter",
             "series 'random' ranks pixels by a uniform-random map per image (seeded)"]
    if classifier:
        notes.append("accuracy: argmax equals the true class; "
                     "mean_score: the true class's score as the spec defines it")
    else:
        match = f"cos(probe, mate) ≥ τ = {tau}" if tau is not None else "cos(probe, mate) > cos(probe, non-mate)"
        notes.append(f"tpr: {match}; mean_score: cos(probe, mate) − cos(probe, non-mate), "
                     "or cos(probe, mate) without non-mates")
    if fill == "soft_dataset_mean":
        notes.append("soft mask: the hide mask is blurred, so pixels next to hidden ones are partly filled too")
    return notes

