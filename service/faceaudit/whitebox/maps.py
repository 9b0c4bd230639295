"""From a signal on a tensor to an H×W map: pixel space, channel reduction, upsampling, smoothing.

- `pixel_gradient`: the adjoint of images.preprocess.to_model_input's linear part. The model input
  is x_c = a_c · pixel_{π(c)} − b_c (π reverses RGB for BGR models; greyscale models read the luma
  Σ_k LUMA_k · pixel_k), so ∂s/∂pixel = πᵀ(a ⊙ ∂s/∂x) (colour) or LUMA · a · ∂s/∂x (greyscale).
- `channels_first`: a feature map or model-input tensor as (B, C, h, w), whatever the input layout.
- `upsample_bilinear`: half-pixel-centred bilinear resize (PyTorch's align_corners=False,
  OpenCV's INTER_LINEAR), edges clamped; written as R · map · Cᵀ with two interpolation matrices.
- `smooth_and_normalise`: Gaussian smoothing then unit mass (Castañón et al. 2018 §III).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.images.preprocess import LUMA
from faceaudit.models.spec import ModelSpec


def channels_last(signal: np.ndarray, layout: str) -> np.ndarray:
    """(B, C, H, W) or (B, H, W, C) model-input signal as (B, H, W, C)."""
    return signal.transpose(0, 2, 3, 1) if layout == "NCHW" else signal


def pixel_gradient(grad: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """∂s/∂pixel (B, H, W, 3) from ∂s/∂(model input) (B, ...) under the spec's preprocessing."""
    scaled = channels_last(grad, spec.require("layout")) * spec.pixel_affine[0]
    if spec.require("channels") == 1:
        return scaled * LUMA
    return scaled[..., ::-1] if spec.channel_order == "BGR" else scaled


def channels_first(tensor: np.ndarray, *, is_input: bool, layout: str) -> np.ndarray:
    """A 4-D tensor as (B, C, h, w): the model input by the spec's layout, any other as ONNX's NCHW."""
    if tensor.ndim != 4:
        raise InvalidRequest("layer", f"the layer's tensor has shape {list(tensor.shape)}; maps are read at a "
                                      "feature map (N, C, H, W)")
    return tensor.transpose(0, 3, 1, 2) if is_input and layout == "NHWC" else tensor


def _interpolation(source: int, target: int) -> np.ndarray:
    """(target, source) matrix of 1-D linear interpolation at half-pixel centres, edges clamped."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0.0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = position - low
    matrix = np.zeros((target, source))
    np.add.at(matrix, (np.arange(target), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(target), high), weight)
    return matrix


def upsample_bilinear(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) map resized bilinearly to `size` (H, W); identity when the sizes match."""
    if values.shape == tuple(size):
        return values
    return _interpolation(values.shape[0], size[0]) @ values @ _interpolation(values.shape[1], size[1]).T


def smooth_and_normalise(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing (σ px, 0 = none; scipy's reflecting borders keep the mass) and unit sum."""
    smoothed = gaussian_filter(values, sigma) if sigma > 0 else values
    total = float(smoothed.sum())
    if not total > 0:
        raise ModelOutputError(
            "excitation backprop lost all probability mass before the map's layer: no neuron on the way from the "
            "target had an excitatory (positive-weight, positive-activation) input"
        )
    return smoothed / total
