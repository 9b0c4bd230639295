"""The one place where images become model input.

Images inside faceaudit are float32 arrays of shape (H, W, 3), RGB, values in [0, 255], at the
model's input size; batches are (B, H, W, 3). `to_model_input` applies the spec's channel order,
greyscale conversion, pixel scaling and layout in a single pass, writing into a caller-owned buffer
so that the scorer can reuse one batch buffer for millions of perturbations.
"""

from __future__ import annotations

import numpy as np

from faceaudit.errors import InvalidRequest
from faceaudit.models.spec import ModelSpec

# ITU-R 601-2 luma, as Pillow's convert("L") computes it; the weights sum to 1, so a grey RGB
# image maps to its own grey value.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def model_input_shape(spec: ModelSpec, batch: int) -> tuple[int, int, int, int]:
    h, w, c = spec.require("height"), spec.require("width"), spec.require("channels")
    return (batch, c, h, w) if spec.require("layout") == "NCHW" else (batch, h, w, c)


def to_model_input(images: np.ndarray, spec: ModelSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Convert a batch (B, H, W, 3) of RGB [0, 255] images to the model's input tensor."""
    layout = spec.require("layout")
    expected = (spec.require("height"), spec.require("width"), 3)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise InvalidRequest("images", f"expected shape (B, {', '.join(map(str, expected))}), got {images.shape}")
    shape = model_input_shape(spec, len(images))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}, got {out.dtype} {out.shape}")
    a, shift = spec.pixel_affine
    if spec.channels == 1:
        # (B, H, W, 1) and (B, 1, H, W) share one memory order: write the luma plane directly.
        plane = out.reshape(shape[0], *expected[:2])
        np.matmul(images, LUMA, out=plane, dtype=np.float32)
        plane *= a[0]
    else:
        source = images[..., ::-1] if spec.channel_order == "BGR" else images
        # Read through the transposed view and write `out` in memory order: numpy's inner loop
        # then runs along a whole row instead of along 3 channels (5x faster for NCHW).
        if layout == "NCHW":
            np.multiply(source.transpose(0, 3, 1, 2), a[:, None, None], out=out, dtype=np.float32, casting="unsafe")
        else:
            np.multiply(source, a, out=out, dtype=np.float32, casting="unsafe")
    if shift.any():
        out -= shift[:, None, None] if layout == "NCHW" else shift
    return out
