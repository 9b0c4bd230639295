"""Pixel orders of saliency maps and the masks, blends and areas the perturbation games build from them.

Pure numpy/scipy on arrays: no model, no validation of user input (the games validate first).

Ranking:
    rank[p] is pixel p's position in the order pixels are taken (hidden, deleted, inserted): rank 0
    goes first. `descending` takes the most important pixels (largest map values) first, as
    deletion and insertion do; ascending takes the least important first, as the hiding game does.
    Ties keep raster order in both directions (row-major, the earlier pixel goes first): the sort
    is stable, so the order is deterministic and the same on every platform. NB a map with large
    flat areas (e.g. a truncated map, zero over most of the face) therefore takes its tied pixels
    top rows first; that is part of what such a map says, and the random baseline never ties.
Counts:
    at fraction f of P pixels, ⌊f·P + ½⌋ pixels are taken (round half up, never numpy's half-to-even).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def pixel_ranks(values: np.ndarray, *, descending: bool) -> np.ndarray:
    """(H, W) ranks 0..H·W−1 of a map's pixels, in the smallest unsigned dtype that holds them.

    Ties keep raster order (stable sort): see the module docstring.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(-flat if descending else flat, kind="stable")
    ranks = np.empty(flat.size, dtype=np.min_scalar_type(max(flat.size - 1, 0)))
    ranks[order] = np.arange(flat.size)
    return ranks.reshape(np.shape(values))


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
