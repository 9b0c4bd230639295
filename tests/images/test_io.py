"""Tests of faceaudit.images.io: decoding, validation, limits and resizing to the model size.

Expectations come from Pillow itself or from numpy written here, never from the code under test.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from faceaudit.errors import InvalidImage, LimitExceeded
from faceaudit.images.io import (
    DEFAULT_MAX_PIXELS, FILE_MAX_PIXELS, check_image_array, fit_to_model, load_image, read_image, read_image_for_model,
)
from faceaudit.models.spec import ModelSpec

H, W = 10, 14


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_rgb(data: bytes) -> np.ndarray:
    """What Pillow itself decodes the bytes to, as RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, built row by row so that no full-size image is ever held."""
    rows = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(rows.compress(row) for _ in range(height)) + rows.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@pytest.fixture
def pixels(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding fail loudly, to prove that a refusal happens from the header alone."""

    def refuse(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def spec(height: int, width: int) -> ModelSpec:
    return ModelSpec().with_values({"height": height, "width": width, "layout": "NHWC", "channels": 3})


# --- read_image -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("kind", ["str_path", "pathlike", "bytes", "bytearray"])
def test_read_image_decodes_png_and_jpeg_from_paths_and_bytes(
    tmp_path: Path, pixels: np.ndarray, fmt: str, kind: str
) -> None:
    data = encode(Image.fromarray(pixels), fmt)
    path = tmp_path / f"face.{fmt.lower()}"
    path.write_bytes(data)
    source = {"str_path": str(path), "pathlike": path, "bytes": data, "bytearray": bytearray(data)}[kind]

    image = read_image(source)

    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, pillow_rgb(data))
    if fmt == "PNG":  # lossless: the very pixels that were written
        np.testing.assert_array_equal(image, pixels)


def _grey(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0])


def _rgba(pixels: np.ndarray) -> Image.Image:
    alpha = np.linspace(0, 255, H * W, dtype=np.uint8).reshape(H, W, 1)
    return Image.fromarray(np.concatenate([pixels, alpha], axis=2))


def _palette(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).quantize(colors=16)


def _sixteen_bit(pixels: np.ndarray) -> Image.Image:
    values = np.linspace(0, 65535, H * W).astype(np.uint16).reshape(H, W)
    return Image.fromarray(values)


@pytest.mark.parametrize(
    "make, mode",
    [(_grey, "L"), (_rgba, "RGBA"), (_palette, "P")],
    ids=["greyscale", "rgba", "palette"],
)
def test_read_image_converts_other_modes_to_uint8_rgb_like_pillow(pixels: np.ndarray, make, mode: str) -> None:
    data = encode(make(pixels), "PNG")
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == mode  # the file really holds the mode under test

    image = read_image(data)

    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, pillow_rgb(data))


def test_read_image_scales_16_bit_images_to_8_bits(pixels: np.ndarray) -> None:
    data = encode(_sixteen_bit(pixels), "PNG")
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode == "I;16"
        expected = np.rint(np.asarray(reopened, dtype=np.float64) * 255 / 65535).astype(np.uint8)

    image = read_image(data)

    np.testing.assert_array_equal(image, np.repeat(expected[..., None], 3, axis=2))
    assert image.max() == 255 and image.min() == 0 and len(np.unique(image)) > 100  # not clipped at 255


def test_read_image_refuses_float_images(tmp_path: Path) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(path)
    with pytest.raises(InvalidImage, match="floating-point"):
        read_image(path)


def _exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def test_read_image_applies_exif_orientation_to_jpeg(pixels: np.ndarray) -> None:
    data = encode(Image.fromarray(pixels), "JPEG", exif=_exif_orientation(6))

    assert read_image(data).shape == (W, H, 3)


def test_read_image_exif_rotation_moves_pixels_clockwise(pixels: np.ndarray) -> None:
    # Orientation 6: the stored image must be turned 90 degrees clockwise to display upright.
    data = encode(Image.fromarray(pixels), "PNG", exif=_exif_orientation(6))

    np.testing.assert_array_equal(read_image(data), np.rot90(pixels, k=-1))


@pytest.mark.parametrize("kind", ["garbage_bytes", "empty_bytes", "text_file", "missing_file", "directory", "truncated_png"])
def test_read_image_unreadable_input_raises_invalid_image_naming_field(
    tmp_path: Path, pixels: np.ndarray, kind: str
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("definitely not an image\n")
    png = encode(Image.fromarray(pixels), "PNG")
    source = {
        "garbage_bytes": b"\x00\x01not an image at all",
        "empty_bytes": b"",
        "text_file": text,
        "missing_file": tmp_path / "missing.png",
        "directory": tmp_path,
        "truncated_png": png[: len(png) // 2],
    }[kind]

    with pytest.raises(InvalidImage) as caught:
        read_image(source, field="probe")

    assert caught.value.field == "probe"
    assert "probe" in str(caught.value)


def test_read_image_zero_sized_header_raises_invalid_image() -> None:
    # Pillow cannot write a 0-pixel image ("cannot write empty image"), so the header is crafted by
    # hand; Pillow refuses it at open, so this reaches InvalidImage without the zero-size branch.
    data = bilevel_png(0, 5)

    with pytest.raises(InvalidImage) as caught:
        read_image(data, field="probe")

    assert caught.value.field == "probe"


def test_read_image_malformed_exif_does_not_escape_as_a_foreign_error() -> None:
    # EXIF whose TIFF header is invalid: either decode without it, or report an InvalidImage;
    # a raw Pillow exception (SyntaxError) must not reach the caller.
    data = encode(Image.new("RGB", (W, H)), "PNG", exif=b"Exif\x00\x00XX*\x00\x00\x00\x00\x08")

    try:
        image = read_image(data, field="probe")
    except InvalidImage as exc:
        assert exc.field == "probe"
    else:
        assert image.shape == (H, W, 3)


def test_read_image_above_max_pixels_raises_limit_exceeded_without_decoding(
    pixels: np.ndarray, no_decoding: None
) -> None:
    data = encode(Image.fromarray(pixels), "PNG")

    with pytest.raises(LimitExceeded, match="probe"):
        read_image(data, max_pixels=H * W - 1, field="probe")


def test_read_image_at_exactly_max_pixels_is_accepted(pixels: np.ndarray) -> None:
    data = encode(Image.fromarray(pixels), "PNG")

    np.testing.assert_array_equal(read_image(data, max_pixels=H * W), pixels)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 20000x20000 (400 M pixel) PNG of under 50 kB."""
    return bilevel_png(20_000, 20_000)


def test_read_image_refuses_decompression_bomb_from_header(bomb: bytes, no_decoding: None) -> None:
    limit = {} if DEFAULT_MAX_PIXELS < 400_000_000 else {"max_pixels": 10_000_000}

    with pytest.raises(LimitExceeded, match="probe"):
        read_image(bomb, field="probe", **limit)


# --- check_image_array ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(H, W), (H, W, 1), (H, W, 3)], ids=["HW", "HW1", "HW3"])
def test_check_image_array_returns_float32_rgb(rng: np.random.Generator, dtype, shape: tuple[int, ...]) -> None:
    array = rng.integers(0, 256, size=shape).astype(dtype)
    expected = np.broadcast_to(array.reshape(H, W, -1).astype(np.float64), (H, W, 3))

    image = check_image_array(array)

    assert image.dtype == np.float32 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, expected)


def test_check_image_array_keeps_fractional_values_and_range_ends() -> None:
    array = np.array([[0.0, 0.25], [127.5, 255.0]])

    np.testing.assert_array_equal(check_image_array(array)[..., 1], array)


@pytest.mark.parametrize(
    "array",
    [
        np.full((H, W, 3), np.nan),
        np.full((H, W), np.inf),
        np.full((H, W, 3), -np.inf, dtype=np.float32),
        np.full((H, W, 3), -1.0),
        np.full((H, W, 3), 255.5),
        np.full((H, W), 300, dtype=np.uint16),
        np.full((H, W), -3, dtype=np.int16),
    ],
    ids=["nan", "inf", "neg_inf", "negative", "above_255", "uint16_300", "int_negative"],
)
def test_check_image_array_bad_values_raise_invalid_image(array: np.ndarray) -> None:
    array = array.copy()
    with pytest.raises(InvalidImage) as caught:
        check_image_array(array, field="probe")
    assert caught.value.field == "probe" and "probe" in str(caught.value)


@pytest.mark.parametrize(
    "shape", [(W,), (2, H, W, 3), (H, W, 2), (H, W, 4), (0, W, 3), (H, 0), ()],
    ids=["1d", "4d", "2_channels", "4_channels", "zero_height", "zero_width", "scalar"],
)
def test_check_image_array_bad_shapes_raise_invalid_image(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidImage) as caught:
        check_image_array(np.zeros(shape, dtype=np.uint8), field="probe")
    assert caught.value.field == "probe"


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U1"])
def test_check_image_array_unsupported_dtypes_raise_invalid_image(dtype) -> None:
    with pytest.raises(InvalidImage) as caught:
        check_image_array(np.zeros((H, W, 3), dtype=dtype), field="probe")
    assert caught.value.field == "probe"


# --- fit_to_model / load_image ----------------------------------------------------------------


def pillow_bilinear(
    image: np.ndarray, height: int, width: int, box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Each channel (or its `box`) resized as a Pillow "F" image, bilinear, clipped to [0, 255]."""
    channels = []
    for c in range(3):
        plane = Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))
        assert plane.mode == "F"
        channels.append(np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR, box=box)))
    return np.clip(np.stack(channels, axis=-1), 0, 255)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_fit_to_model_leaves_right_sized_image_unchanged(rng: np.random.Generator, dtype) -> None:
    image = rng.uniform(0, 255, size=(H, W, 3)).astype(dtype)

    fitted = fit_to_model(image, spec(H, W))

    assert fitted.dtype == np.float32 and fitted.shape == (H, W, 3)
    np.testing.assert_array_equal(fitted, image.astype(np.float32))


@pytest.mark.parametrize("size", [(6, 5), (23, 31), (H, 2 * W), (5, W)], ids=["down", "up", "wider", "shorter"])
def test_fit_to_model_resizes_like_pillow_bilinear(rng: np.random.Generator, size: tuple[int, int]) -> None:
    image = rng.uniform(0, 255, size=(H, W, 3)).astype(np.float32)
    image[0, 0], image[-1, -1] = 0.0, 255.0

    fitted = fit_to_model(image, spec(*size))

    assert fitted.dtype == np.float32 and fitted.shape == (*size, 3)
    assert fitted.min() >= 0 and fitted.max() <= 255
    np.testing.assert_allclose(fitted, pillow_bilinear(image, *size), rtol=0, atol=1e-3)


def test_load_image_from_bytes_matches_pillow_decode_and_resize(pixels: np.ndarray) -> None:
    data = encode(Image.fromarray(pixels), "PNG")

    loaded = load_image(data, spec(7, 9))

    assert loaded.dtype == np.float32 and loaded.shape == (7, 9, 3)
    np.testing.assert_allclose(loaded, pillow_bilinear(pixels.astype(np.float32), 7, 9), rtol=0, atol=1e-3)


def test_load_image_array_above_max_pixels_raises_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded, match="probe"):
        load_image(np.zeros((H, W, 3), dtype=np.uint8), spec(4, 4), max_pixels=H * W - 1, field="probe")


def test_load_image_array_at_max_pixels_is_accepted() -> None:
    loaded = load_image(np.full((H, W), 7, dtype=np.uint8), spec(4, 4), max_pixels=H * W)

    np.testing.assert_allclose(loaded, np.full((4, 4, 3), 7.0), atol=1e-4)


def test_load_image_bytes_above_max_pixels_raises_limit_exceeded(pixels: np.ndarray, no_decoding: None) -> None:
    with pytest.raises(LimitExceeded):
        load_image(encode(Image.fromarray(pixels), "PNG"), spec(4, 4), max_pixels=H * W - 1)


# --- formats ----------------------------------------------------------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n"


def test_an_eps_payload_is_refused_without_pillow_ever_trying_its_eps_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    with Image.open(io.BytesIO(EPS)) as opened:
        assert opened.format == "EPS"  # a real EPS, which Pillow would hand to Ghostscript to decode
    tried = []
    Image.init()
    factory, accept = Image.OPEN["EPS"]
    monkeypatch.setitem(Image.OPEN, "EPS", (factory, lambda prefix: tried.append(prefix) or accept(prefix)))

    with pytest.raises(InvalidImage) as caught:
        read_image(EPS, field="probe")

    assert caught.value.field == "probe" and "PNG, JPEG, BMP, TIFF or WebP" in str(caught.value)
    assert tried == []


@pytest.mark.parametrize("fmt", ["GIF", "PPM", "ICO", "TGA", "PCX", "SGI", "DDS"])
def test_formats_the_product_does_not_support_are_refused(pixels: np.ndarray, fmt: str) -> None:
    data = encode(Image.fromarray(pixels), fmt)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == fmt  # Pillow alone would read it

    with pytest.raises(InvalidImage, match="not a readable PNG, JPEG, BMP, TIFF or WebP image"):
        read_image(data, field="probe")


@pytest.mark.parametrize(("fmt", "options"), [("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_bmp_tiff_and_webp_are_read(pixels: np.ndarray, fmt: str, options: dict) -> None:
    np.testing.assert_array_equal(read_image(encode(Image.fromarray(pixels), fmt, **options)), pixels)


def test_multi_picture_jpeg_from_cameras_is_read_as_jpeg(pixels: np.ndarray) -> None:
    data = encode(Image.fromarray(pixels), "MPO", save_all=True, append_images=[Image.fromarray(pixels[::-1])])
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "MPO"

    np.testing.assert_array_equal(read_image(data), pillow_rgb(data))


def test_sixteen_bit_values_outside_0_to_65535_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.tiff"
    Image.fromarray(np.array([[70000, 5]], dtype=np.int32)).save(path)
    with pytest.raises(InvalidImage, match="outside 0..65535"):
        read_image(path)
    Image.fromarray(np.array([[65535, 5, 0, 32768]], dtype=np.int32)).save(path)
    np.testing.assert_array_equal(read_image(path)[0, :, 0], np.rint(np.array([65535, 5, 0, 32768]) * 255 / 65535))


# --- limits -----------------------------------------------------------------------------------


def test_bytes_default_to_the_request_limit_and_files_to_the_generous_file_limit(
    tmp_path: Path, no_decoding: None
) -> None:
    assert DEFAULT_MAX_PIXELS < 4097 * 4096 <= FILE_MAX_PIXELS
    data = bilevel_png(4097, 4096)
    path = tmp_path / "large.png"
    path.write_bytes(data)

    with pytest.raises(LimitExceeded, match="probe"):
        read_image(data, field="probe")
    with pytest.raises(LimitExceeded, match="probe"):
        read_image_for_model(data, spec(8, 8), field="probe")
    with pytest.raises(AssertionError, match="pixels were decoded"):  # past the header check: decoding began
        read_image(path)
    with pytest.raises(AssertionError, match="pixels were decoded"):
        load_image(path, spec(8, 8))


# --- read_image_for_model ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [Image.fromarray, _grey, _rgba, _palette, _sixteen_bit], ids=["rgb", "l", "rgba", "p", "i16"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("size", [(4, 3), (3, 5), (23, 31)], ids=["down", "down_below_the_gap", "up"])
def test_read_image_for_model_is_bit_identical_to_decoding_then_fitting_below_the_shrink_threshold(
    pixels: np.ndarray, make, fmt: str, size: tuple[int, int]
) -> None:
    image = make(pixels)
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    data = encode(image, fmt)
    assert H < 2 * 3 * size[0] and W < 2 * 3 * size[1]  # below 2·REDUCING_GAP times the model size on both axes

    fitted, original = read_image_for_model(data, spec(*size))

    assert original == (H, W) and fitted.dtype == np.float32 and fitted.shape == (*size, 3)
    np.testing.assert_array_equal(fitted, pillow_bilinear(read_image(data).astype(np.float32), *size))


def test_the_shrink_starts_at_twice_the_reducing_gap_per_axis(rng: np.random.Generator) -> None:
    just_below = rng.integers(0, 256, size=(47, 47, 3), dtype=np.uint8)  # 47 < 2 · 3 · 8
    np.testing.assert_array_equal(fit_to_model(just_below, spec(8, 8)),
                                  pillow_bilinear(just_below.astype(np.float32), 8, 8))
    at = rng.integers(0, 256, size=(47, 48, 3), dtype=np.uint8)  # x reaches 48: boxes of 2 x 1 pixels
    np.testing.assert_array_equal(fit_to_model(at, spec(8, 8)), pillow_bilinear(_box_means(at, 1, 2), 8, 8))


def _box_means(image: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Means of fy × fx boxes from the top left, rounded half up; boxes cut by the edge average what they cover."""
    starts_y, starts_x = np.arange(0, image.shape[0], fy), np.arange(0, image.shape[1], fx)
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.int64), starts_y, axis=0), starts_x, axis=1)
    counts = np.outer(np.diff(starts_y, append=image.shape[0]), np.diff(starts_x, append=image.shape[1]))[..., None]
    return ((2 * sums + counts) // (2 * counts)).astype(np.float32)


@pytest.mark.parametrize(("shape", "size", "factors"), [((96, 96), (8, 8), (4, 4)), ((48, 120), (8, 5), (2, 8))])
def test_images_far_above_the_model_size_are_box_averaged_in_8_bits_then_resized(
    rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int], factors: tuple[int, int]
) -> None:
    big = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    expected = pillow_bilinear(_box_means(big, *factors), *size)

    fitted, original = read_image_for_model(encode(Image.fromarray(big), "PNG"), spec(*size))

    assert original == shape
    np.testing.assert_array_equal(fitted, expected)
    np.testing.assert_array_equal(fit_to_model(big, spec(*size)), expected)  # arrays given as uint8 alike
    np.testing.assert_array_equal(fit_to_model(big.astype(np.float32), spec(*size)),  # float arrays as before
                                  pillow_bilinear(big.astype(np.float32), *size))


def test_boxes_cut_by_the_image_edge_average_what_they_cover(rng: np.random.Generator) -> None:
    big = rng.integers(0, 256, size=(50, 99, 3), dtype=np.uint8)  # x factor 4 leaves a last box 3 pixels wide

    fitted = fit_to_model(big, spec(8, 8))

    # The bilinear step resizes the original's extent, 99/4 = 24.75 boxes wide, not the 25 boxes.
    # Pillow rounds the cut boxes' means its own way: within one grey level, which bilinear weights keep.
    expected = pillow_bilinear(_box_means(big, 2, 4), 8, 8, box=(0, 0, 99 / 4, 50 / 2))
    np.testing.assert_allclose(fitted, expected, rtol=0, atol=1.0001)


def _ramp(width: int, height: int) -> np.ndarray:
    """Grey levels that encode position (red: x + y, green: x, blue: y): a shift shows as a difference."""
    x, y = np.linspace(0, 255, width)[None, :], np.linspace(0, 255, height)[:, None]
    return np.rint(np.stack(np.broadcast_arrays((x + y) / 2, x, y), axis=-1)).astype(np.uint8)


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Detail about 8 pixels across: a shift of a fraction of a model pixel changes it by many grey levels."""
    coarse = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


# Sizes the reduction factor does not divide (1153 / 6, 1151 / 5, 1001 / 5, 577 / 2, 1000 / 3, 900 / 2):
# Image.reduce rounds up, and resizing its whole output shifted content by up to a third of a model pixel.
UNEVEN = [((1153, 1153), (64, 64)), ((1151, 1001), (64, 64)), ((1000, 900), (112, 96)), ((577, 700), (112, 96))]


@pytest.mark.parametrize(("shape", "size"), UNEVEN, ids=["1153", "1151x1001", "1000x900", "577x700"])
def test_a_shrunk_image_not_divisible_by_its_factor_keeps_its_geometry(
    rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]
) -> None:
    ramp, texture = _ramp(shape[1], shape[0]), _texture(rng, shape[1], shape[0])

    for image in (ramp, texture):
        exact = pillow_bilinear(image.astype(np.float32), *size)  # no 8-bit shrink at all
        pillow = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BILINEAR, reducing_gap=3))
        for fitted in (fit_to_model(image, spec(*size)), read_image_for_model(encode(Image.fromarray(image), "PNG"),
                                                                              spec(*size))[0]):
            error = np.abs(fitted - exact)
            assert error.mean() < 1  # the whole-image stretch left 3.4 to 5.7 on the texture
            assert error.mean() <= np.abs(pillow - exact).mean() + 0.1  # as good as Pillow's own shrink
            if image is ramp:
                assert error.max() < 0.6  # up to 1.19 at the far edge before


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_decoded_at_a_reduced_scale_keeps_its_geometry_in_every_exif_orientation(
    rng: np.random.Generator, orientation: int
) -> None:
    # 1537 x 1203 decodes at 1/4 to 385 x 301 (the last column and row partly outside the photo),
    # then boxes of 2 leave 193 x 151: the partial pixels lie where the EXIF turn puts them.
    for image, quality in ((_ramp(1537, 1203), 98), (_texture(rng, 1537, 1203), 95)):
        data = encode(Image.fromarray(image), "JPEG", quality=quality, exif=_exif_orientation(orientation))
        exact = pillow_bilinear(read_image(data).astype(np.float32), 64, 64)  # the full decode, turned

        fitted, original = read_image_for_model(data, spec(64, 64))

        assert original == ((1537, 1203) if orientation >= 5 else (1203, 1537))
        error = np.abs(fitted - exact)
        assert error.mean() < 1  # without turning the partial pixels' place: 1.3 to 3.3 on the texture, or a crash
        if quality == 98:  # the ramp
            assert error.max() < 0.6


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_and_reports_its_full_size(rng: np.random.Generator) -> None:
    smooth = np.kron(rng.integers(0, 256, size=(12, 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 192 x 256
    data = encode(Image.fromarray(smooth), "JPEG", quality=95, exif=_exif_orientation(6))
    with Image.open(io.BytesIO(data)) as drafted:
        drafted.draft(None, (48, 48))  # what 3 x a 16-pixel model side asks of the JPEG decoder
        assert drafted.size == (64, 48)  # decoded at a quarter of each side, too small to box-average further
        expected = pillow_bilinear(np.rot90(np.asarray(drafted.convert("RGB")), k=-1).astype(np.float32), 16, 16)

    fitted, original = read_image_for_model(data, spec(16, 16))

    assert original == (256, 192)  # the turned image's own height and width, the frame of its landmarks
    np.testing.assert_array_equal(fitted, expected)
    direct = fit_to_model(read_image(data).astype(np.float32), spec(16, 16))
    assert np.abs(fitted - direct).mean() < 2  # close to decoding everything and resizing in float


def test_read_image_for_model_holds_no_full_size_array(tmp_path: Path) -> None:
    side = 2000
    path = tmp_path / "big.png"
    Image.fromarray(np.tile(np.arange(side, dtype=np.uint16)[None] % 256, (side, 1)).astype(np.uint8)).convert(
        "RGB").save(path)
    tracemalloc.start()  # numpy's allocations (Pillow's own buffers are not traced)
    try:
        fitted, _ = read_image_for_model(path, spec(16, 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fitted.shape == (16, 16, 3)
    assert peak < side * side  # less than one full-size uint8 plane; a float copy would be 12 x that
