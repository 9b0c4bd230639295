"""Read images (PNG, JPEG, BMP, TIFF, WebP) and bring them to the model's size.

Only those formats are opened: Pillow knows some forty more, and some hand the bytes to other
programs (EPS and PS run Ghostscript where it is installed). The pixel count is checked from the
header before anything is decoded, so a decompression bomb costs nothing. Resizing is bilinear
with antialiasing (Pillow) straight to the model's height and width: face crops are expected to be
aligned already, and an aspect ratio change is recorded by the caller rather than silently cropped
away.

Memory: `read_image_for_model` never holds a full-size float image. An image far larger than the
model input is shrunk while still 8-bit, as Pillow's `thumbnail` and `resize(reducing_gap=...)` do:
JPEG decodes at 1/2, 1/4 or 1/8 scale (`Image.draft`), then `Image.reduce` averages integer boxes,
always leaving at least REDUCING_GAP times the model size for the float bilinear step (Pillow: at a
gap of 3 the result is "indistinguishable from fair resampling in most cases"). Both round the size
up when the factor does not divide it (1153 px / 6 -> 193 px, the last one partly outside the
image), so the bilinear step resizes the original's fractional extent (1153/6 = 192.17 px) rather
than the whole reduced image, as Pillow's `resize(reducing_gap=)` does: content stays where it was
(and landmarks scaled from the original's size with it). An image under
2·REDUCING_GAP times the model size on both axes skips both steps and is resized exactly as a float
image is (`fit_to_model`), to the bit.

Limits: DEFAULT_MAX_PIXELS bounds encoded bytes and arrays (what requests carry); files the user
names on this machine default to the more generous FILE_MAX_PIXELS.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from faceaudit.errors import InvalidImage, LimitExceeded
from faceaudit.models.spec import ModelSpec

FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")  # Pillow's names; JPEG includes multi-picture (MPO) files
FORMAT_NAMES = "PNG, JPEG, BMP, TIFF or WebP"
DEFAULT_MAX_PIXELS = 4096 * 4096  # bytes and arrays (requests): far above any face crop, 12-16 MP photos pass
FILE_MAX_PIXELS = 50_000_000  # local files: the user chose them, and decoding stays 8-bit
REDUCING_GAP = 3  # the 8-bit shrink leaves at least this many times the model size for the bilinear step
# The 16-bit to 8-bit map, rint(v · 255/65535) for every v: one byte per pixel out, no float image.
_SIXTEEN_TO_EIGHT = np.rint(np.arange(65536, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# The errors Pillow raises for corrupt pixel data or EXIF blocks.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, IndexError, TypeError, struct.error, Image.DecompressionBombError)


def read_image(
    source: str | os.PathLike[str] | bytes, *, max_pixels: int | None = None, field: str = "image"
) -> np.ndarray:
    """Decode an image file or encoded bytes to uint8 RGB (H, W, 3), EXIF orientation applied.

    `max_pixels` None: FILE_MAX_PIXELS for a file, DEFAULT_MAX_PIXELS for bytes.
    """
    with _open(source, max_pixels, field) as handle:
        try:
            ImageOps.exif_transpose(handle, in_place=True)
            image = _to_8_bit(handle, field)
        except _DECODE_ERRORS as exc:
            raise InvalidImage(field, f"cannot decode image ({exc})") from exc
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)


def read_image_for_model(
    source: str | os.PathLike[str] | bytes, spec: ModelSpec, *, max_pixels: int | None = None, field: str = "image"
) -> tuple[np.ndarray, tuple[int, int]]:
    """The model-sized float32 RGB image of an image file or encoded bytes, and the image's own
    (height, width) after EXIF orientation (the frame of landmarks given with it).

    Equal to `fit_to_model(read_image(source).astype(np.float32), spec)` for images under
    2·REDUCING_GAP times the model size; larger ones are shrunk in 8 bits first (module docstring).
    """
    size = (spec.require("width"), spec.require("height"))
    with _open(source, max_pixels, field) as handle:
        width, height = handle.size
        try:
            orientation = handle.getexif().get(ExifTags.Base.Orientation, 1)  # as exif_transpose reads it
            side = REDUCING_GAP * max(size)  # in both axes: the stored image may be turned
            drafted = handle.draft(None, (side, side))  # JPEG only (None for other formats); keeps ≥ side pixels
            extent = _turned(drafted[1] if drafted else (0, 0, width, height), handle.size, orientation)
            ImageOps.exif_transpose(handle, in_place=True)
            image, extent = _shrink(_to_8_bit(handle, field), size, extent)
        except _DECODE_ERRORS as exc:
            raise InvalidImage(field, f"cannot decode image ({exc})") from exc
        pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    turned = orientation in (5, 6, 7, 8)
    return _resize(pixels, size, extent), ((width, height) if turned else (height, width))


def _open(source: str | os.PathLike[str] | bytes, max_pixels: int | None, field: str) -> Image.Image:
    """The opened (not yet decoded) image, refused from its header when too large or empty."""
    if max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS if isinstance(source, (bytes, bytearray)) else FILE_MAX_PIXELS
    try:
        handle = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source),
                            formats=FORMATS)
    except FileNotFoundError as exc:
        raise InvalidImage(field, f"file not found: {source}") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own guard fires above ~179M pixels
        raise LimitExceeded(f"{field}: {exc} (max_pixels {max_pixels:,})") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(field, f"not a readable {FORMAT_NAMES} image") from exc
    except OSError as exc:
        raise InvalidImage(field, f"not a readable image ({exc})") from exc
    width, height = handle.size
    if width == 0 or height == 0:
        handle.close()
        raise InvalidImage(field, f"image has zero size ({width}x{height})")
    if width * height > max_pixels:
        handle.close()
        raise LimitExceeded(f"{field}: {width}x{height} pixels is above the limit of {max_pixels:,} (max_pixels)")
    return handle


def _to_8_bit(image: Image.Image, field: str) -> Image.Image:
    """An "L" or "RGB" image. 16-bit images are scaled by 255/65535 (Pillow would clip them at 255)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image)
        if image.mode == "I" and (pixels.min() < 0 or pixels.max() > 65535):
            raise InvalidImage(field, f"{image.mode} image with values outside 0..65535")
        if pixels.dtype != np.uint16:  # "I" (int32) or big-endian: index the map with native uint16
            pixels = pixels.astype(np.uint16)
        return Image.fromarray(_SIXTEEN_TO_EIGHT[pixels])
    if image.mode == "F":
        raise InvalidImage(field, "floating-point images have no standard range: convert to 8- or 16-bit")
    if image.mode in ("L", "RGB"):
        return image  # "L" becomes RGB after shrinking, a third of the work
    return image.convert("RGB")


# The original image's extent (x0, y0, x1, y1) in a decoded or shrunk image's pixels: fractional
# where JPEG scaling or Image.reduce rounded the size up.
Extent = tuple[float, float, float, float]
# Per EXIF orientation (exif_transpose's transposition), where an extent in an image of width w and
# height h lies once turned: x -> w - x for a left-right flip, (x, y) -> (h - y, x) for ROTATE_270...
_TURNS = {
    2: lambda x0, y0, x1, y1, w, h: (w - x1, y0, w - x0, y1),
    3: lambda x0, y0, x1, y1, w, h: (w - x1, h - y1, w - x0, h - y0),
    4: lambda x0, y0, x1, y1, w, h: (x0, h - y1, x1, h - y0),
    5: lambda x0, y0, x1, y1, w, h: (y0, x0, y1, x1),
    6: lambda x0, y0, x1, y1, w, h: (h - y1, x0, h - y0, x1),
    7: lambda x0, y0, x1, y1, w, h: (h - y1, w - x1, h - y0, w - x0),
    8: lambda x0, y0, x1, y1, w, h: (y0, w - x1, y1, w - x0),
}


def _turned(extent: Extent, size: tuple[int, int], orientation: int) -> Extent:
    """`extent` in an image of `size` (w, h) as it lies after exif_transpose turns the image."""
    turn = _TURNS.get(orientation)
    return extent if turn is None else turn(*extent, *size)


def _shrink(image: Image.Image, size: tuple[int, int], extent: Extent) -> tuple[Image.Image, Extent]:
    """The 8-bit image box-averaged by the integer factors that keep ≥ REDUCING_GAP × `size` (w, h),
    and `extent` in its pixels."""
    fx, fy = _reduction(image.size, size)
    if (fx, fy) == (1, 1):
        return image, extent
    x0, y0, x1, y1 = extent
    return image.reduce((fx, fy)), (x0 / fx, y0 / fy, x1 / fx, y1 / fy)


def _reduction(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Per axis (x, y): Pillow's resize(reducing_gap=REDUCING_GAP) factor, int(source / target / gap) or 1."""
    return (max(1, image_size[0] // (REDUCING_GAP * size[0])), max(1, image_size[1] // (REDUCING_GAP * size[1])))


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
    """Resize an RGB image (H, W, 3) in [0, 255] to the spec's input size: float32 (h, w, 3) in [0, 255].

    A uint8 image 2·REDUCING_GAP or more times the model size is box-averaged in 8 bits first (module
    docstring); anything else is resized per channel in float32, one channel copy at a time.
    """
    size = (spec.require("width"), spec.require("height"))
    extent: Extent = (0, 0, image.shape[1], image.shape[0])
    if image.dtype == np.uint8 and _reduction(image.shape[1::-1], size) != (1, 1):
        shrunk, extent = _shrink(Image.fromarray(image), size, extent)
        image = np.asarray(shrunk)
    return _resize(image, size, extent)


def _resize(image: np.ndarray, size: tuple[int, int], extent: Extent) -> np.ndarray:
    """`extent` of an RGB image resized bilinearly to `size` (w, h) per channel in float32, clipped to [0, 255]."""
    if image.shape[1::-1] == size and extent == (0, 0, *size):
        return image.astype(np.float32, copy=False)
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
            size, Image.BILINEAR, box=extent))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 255.0)


def load_image(
    source: str | os.PathLike[str] | bytes | np.ndarray, spec: ModelSpec, *, max_pixels: int | None = None,
    field: str = "image",
) -> np.ndarray:
    """An image from a file, encoded bytes or an array, as the model-sized float32 RGB image.

    `max_pixels` None: FILE_MAX_PIXELS for a file, DEFAULT_MAX_PIXELS for bytes and arrays.
    """
    if isinstance(source, np.ndarray):
        limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > limit:
            raise LimitExceeded(f"{field}: {source.shape[1]}x{source.shape[0]} pixels is above the limit of {limit:,}")
        return fit_to_model(check_image_array(source, field=field), spec)
    return read_image_for_model(source, spec, max_pixels=max_pixels, field=field)[0]
