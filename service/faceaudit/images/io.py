"""Read images (PNG, JPEG and whatever else Pillow decodes) and bring them to the model's size.

The pixel count is checked from the header before anything is decoded, so a decompression bomb
costs nothing. Resizing is bilinear with antialiasing (Pillow) straight to the model's height and
width: face crops are expected to be aligned already, and an aspect ratio change is recorded by the
caller rather than silently cropped away.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceaudit.errors import InvalidImage, LimitExceeded
from faceaudit.models.spec import ModelSpec

DEFAULT_MAX_PIXELS = 50_000_000  # far above any face crop, far below what exhausts memory


def read_image(
    source: str | os.PathLike[str] | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, field: str = "image"
) -> np.ndarray:
    """Decode an image file or encoded bytes to uint8 RGB (H, W, 3), EXIF orientation applied."""
    try:
        handle = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source))
    except FileNotFoundError as exc:
        raise InvalidImage(field, f"file not found: {source}") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own guard fires above ~179M pixels
        raise LimitExceeded(f"{field}: {exc} (max_pixels {max_pixels:,})") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidImage(field, f"not a readable image ({exc})") from exc
    with handle:
        width, height = handle.size
        if width == 0 or height == 0:
            raise InvalidImage(field, f"image has zero size ({width}x{height})")
        if width * height > max_pixels:
            raise LimitExceeded(f"{field}: {width}x{height} pixels is above the limit of {max_pixels:,} (max_pixels)")
        try:
            image = _to_rgb8(ImageOps.exif_transpose(handle), field)
        # The errors Pillow raises for corrupt pixel data or EXIF blocks.
        except (OSError, ValueError, SyntaxError, IndexError, TypeError, struct.error, Image.DecompressionBombError) as exc:
            raise InvalidImage(field, f"cannot decode image ({exc})") from exc
    return np.asarray(image, dtype=np.uint8)


def _to_rgb8(image: Image.Image, field: str) -> Image.Image:
    """8-bit RGB. 16-bit images are scaled by 255/65535 (Pillow would clip them at 255 instead)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.min() < 0 or pixels.max() > 65535:
            raise InvalidImage(field, f"{image.mode} image with values outside 0..65535")
        grey = np.rint(pixels * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        raise InvalidImage(field, "floating-point images have no standard range: convert to 8- or 16-bit")
    return image.convert("RGB")


def check_image_array(array: np.ndarray, *, field: str = "image") -> np.ndarray:
    """Validate a caller's image array and return it as float32 RGB (H, W, 3) in [0, 255].

    Accepts (H, W), (H, W, 1) and (H, W, 3) arrays of any real dtype; uint8 is taken as is, float
    arrays must already be in [0, 255].
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or 0 in array.shape:
        raise InvalidImage(field, f"expected an (H, W, 3) or (H, W) image, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InvalidImage(field, f"unsupported dtype {array.dtype}")
    image = array.astype(np.float32)
    if not np.isfinite(image).all():
        raise InvalidImage(field, "contains NaN or infinite values")
    if image.min() < 0 or image.max() > 255:
        raise InvalidImage(field, f"values must lie in [0, 255], got [{image.min():g}, {image.max():g}]")
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def fit_to_model(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Resize an RGB image (H, W, 3) to the spec's input size: float32 (h, w, 3) in [0, 255]."""
    size = (spec.require("width"), spec.require("height"))
    if image.shape[1::-1] == size:
        return image.astype(np.float32, copy=False)
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(size, Image.BILINEAR))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 255.0)


def load_image(
    source: str | os.PathLike[str] | bytes | np.ndarray, spec: ModelSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS,
    field: str = "image",
) -> np.ndarray:
    """An image from a file, encoded bytes or an array, as the model-sized float32 RGB image."""
    if isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > max_pixels:
            raise LimitExceeded(f"{field}: {source.shape[1]}x{source.shape[0]} pixels is above the limit of {max_pixels:,}")
        image = check_image_array(source, field=field)
    else:
        image = read_image(source, max_pixels=max_pixels, field=field).astype(np.float32)
    return fit_to_model(image, spec)
