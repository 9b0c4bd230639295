"""Pixel orders of saliency maps and the masks, blends and areas the perturbation games build from them.

Pure numpy/scipy on arrays: no model, no validation of user input (the games validate first).

Ranking:
    rank[p] is pixel p's position in the order pixels are taken (hidden, deleted, inserted,
    inpainted): rank 0 goes first. `descending` takes the most important pixels (largest map values)
    first, as deletion, insertion and the inpainting game do; ascending takes the least important
    first, as the hiding game does.
Ties (one rule for every game): pixels with equal map values go in the order they take in a
    random permutation of the image's pixels, numpy.random.default_rng([seed, index, 0]), with
    `seed` the game's seed and `index` the image's position in the game's items, so it is the same
    for every series (method) of an image and in both directions, and reproducible. Sorting the
    map as it is (stably) would take tied pixels in raster order, top rows first: a map with large
    flat areas (a ReLU'd Grad-CAM, tcEBP, a constant map) would then hide or delete the top of the
    face first, a positional bias that is no part of what the map says. Williford et al.'s inpainting code breaks
    ties with 1e-9 noise; a permutation does the same without changing any value.
Counts:
    at fraction f of P pixels, ⌊f·P + ½⌋ pixels are taken (round half up, never numpy's half-to-even).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def tie_order(pixels: int, seed: int, index: int) -> np.ndarray:
    """The tie-break of image `index` under `seed`: a random permutation of its pixels (module docstring)."""
    return np.random.default_rng([seed, index, 0]).permutation(pixels)


def pixel_order(values: np.ndarray, *, descending: bool, seed: int, index: int) -> np.ndarray:
    """Flat indices of a map's pixels in the order they are taken; ties in tie_order(seed, index).

    A stable sort of the values read in tie order keeps tied pixels in that order (as fast as a
    plain stable argsort; a lexsort on (tie key, value) is 1.7× slower at 224×224).
    """
    shuffled = tie_order(np.size(values), seed, index)
    flat = np.asarray(values, dtype=np.float64).ravel()[shuffled]
    return shuffled[np.argsort(-flat if descending else flat, kind="stable")]


def ranks_of(order: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Ranks (shape) of an order's pixels, in the smallest unsigned dtype that holds them."""
    ranks = np.empty(order.size, dtype=np.min_scalar_type(max(order.size - 1, 0)))
    ranks[order] = np.arange(order.size)
    return ranks.reshape(shape)


def pixel_ranks(values: np.ndarray, *, descending: bool, seed: int, index: int) -> np.ndarray:
    """(H, W) ranks 0..H·W−1 of a map's pixels: ranks_of(pixel_order(...))."""
    return ranks_of(pixel_order(values, descending=descending, seed=seed, index=index), np.shape(values))


def pixel_counts(fractions: np.ndarray, pixels: int) -> np.ndarray:
    """Pixels taken at each fraction: ⌊f·pixels + ½⌋ (round half up), as int64."""
    return np.floor(np.asarray(fractions, dtype=np.float64) * pixels + 0.5).astype(np.int64)


def taken(ranks: np.ndarray, count: int) -> np.ndarray:
    """Boolean masks (…, H, W) of the first `count` pixels of each order: rank < count."""
    return ranks < count


def soft_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Hard masks (N, H, W) blurred by a Gaussian of `sigma` px per image: float32 weights in [0, 1].

    Edges repeat the border value (mode "nearest"), so an all-hidden mask stays 1 and an empty one 0.
    """
    return gaussian_filter(mask.astype(np.float32), sigma=(0, sigma, sigma), mode="nearest")


def blend(base: np.ndarray, fill: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """base·(1 − m) + fill·m per pixel, for (N, H, W, 3) images and (N, H, W) masks.

    A boolean mask copies pixels exactly (no rounding): the all-taken image is the fill itself.
    """
    if mask.dtype == bool:
        return np.where(mask[..., None], fill, base).astype(np.float32, copy=False)
    weight = mask[..., None]
    return (base + (fill - base) * weight).astype(np.float32, copy=False)


def curve_area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) divided by the x span: the curve's mean height.

    Over x in [0, 1] (deletion, insertion) this is the plain area; over the hiding game's
    [0, 0.99] it keeps a rate's area in [0, 1].
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or x[-1] <= x[0]:
        raise ValueError("a curve needs at least two points over an x range of positive length")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1])) / 2 / (x[-1] - x[0]))
