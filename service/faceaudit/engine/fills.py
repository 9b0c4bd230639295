"""Baseline images that occluded pixels are replaced with (occlusion, CIS, games).

Fills are in pixel space (RGB, [0, 255]), the space perturbations are made in:
- zero: black. NB captum's default baseline 0 is in *model input* space, which is the colour
  `mean / scale` in pixel space under the spec (e.g. mid-grey for mean 127.5, scale 1); use
  `constant` with that colour to reproduce captum exactly.
- mean: the image's own mean colour (per channel).
- dataset_mean: a dataset's mean colour; default the VGGFace training mean in RGB,
  (129.1863, 104.7624, 93.5940) (Parkhi et al., BMVC 2015, from the released model's metadata).
- blur: the image blurred with a Gaussian of `blur_sigma` px.
- constant: the colour given as `constant` (one grey value or an RGB triple).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from faceaudit.errors import InvalidRequest

FILLS = ("zero", "mean", "dataset_mean", "blur", "constant")
VGGFACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)


def check_fill(fill: str, constant: tuple[float, ...] | None, blur_sigma: float, colour: tuple[float, ...]) -> None:
    """Validate fill options (for options dataclasses' __post_init__), naming the option at fault."""
    if fill not in FILLS:
        raise InvalidRequest("fill", f"{fill!r} is not one of {', '.join(FILLS)}")
    if fill == "constant":
        if constant is None:
            raise InvalidRequest("constant", "fill 'constant' needs the colour: one value or three in [0, 255]")
        _check_colour("constant", constant)
    elif constant is not None:
        raise InvalidRequest("constant", f"is only used with fill 'constant', not {fill!r}: set fill=constant too")
    _check_colour("dataset_mean", colour)
    if not 0 < blur_sigma <= 1000:
        raise InvalidRequest("blur_sigma", f"{blur_sigma} must be in (0, 1000] pixels")


def _check_colour(name: str, colour: tuple[float, ...]) -> None:
    if len(colour) not in (1, 3) or not all(np.isfinite(c) and 0 <= c <= 255 for c in colour):
        raise InvalidRequest(name, f"{colour!r} must be one value or three, each in [0, 255]")


def baseline_image(
    image: np.ndarray, fill: str, *, constant: tuple[float, ...] | None = None, blur_sigma: float = 5.0,
    dataset_mean: tuple[float, ...] = VGGFACE_MEAN_RGB,
) -> np.ndarray:
    """The (H, W, 3) float32 image whose pixels replace occluded ones."""
    check_fill(fill, constant, blur_sigma, dataset_mean)
    if fill == "blur":
        return gaussian_filter(image.astype(np.float32), sigma=(blur_sigma, blur_sigma, 0), mode="nearest")
    if fill == "zero":
        colour = np.zeros(3)
    elif fill == "mean":
        colour = image.reshape(-1, 3).mean(axis=0)
    else:
        colour = np.broadcast_to(np.asarray(constant if fill == "constant" else dataset_mean, dtype=np.float64), 3)
    return np.broadcast_to(colour.astype(np.float32), image.shape).copy()


@dataclass(frozen=True)
class FillOptions:
    """The fill options every perturbation method shares; subclasses add their own fields."""

    fill: str = "zero"  # what hidden pixels become: one of FILLS
    constant: tuple[float, ...] | None = None  # colour for fill "constant", RGB or grey in [0, 255]
    blur_sigma: float = 5.0  # px, for fill "blur"
    dataset_mean: tuple[float, ...] = VGGFACE_MEAN_RGB  # colour for fill "dataset_mean"

    def __post_init__(self) -> None:
        check_fill(self.fill, self.constant, self.blur_sigma, self.dataset_mean)

    def baseline(self, image: np.ndarray) -> np.ndarray:
        """The fill image whose pixels replace the hidden pixels of `image`."""
        return baseline_image(image, self.fill, constant=self.constant, blur_sigma=self.blur_sigma,
                              dataset_mean=self.dataset_mean)
