"""Small, deterministic, hand-built ONNX face-model fixtures.

Every builder returns an ``onnx.ModelProto`` (IR version 8, default-domain
opset 17) made with ``onnx.helper`` and numpy only. The models are tiny,
but each one copies a quirk seen in real exports (NHWC inputs, hard-coded
batch sizes, numeric output names, quantisation, ...). Weights come from
``numpy.random.default_rng(seed)`` with He-style scaling, so for inputs in
[0, 1] the outputs are finite and of order 1 (except ``nan_classifier``,
which returns NaN on purpose). The models pass
``onnx.checker.check_model(model, full_check=True)``, except
``wrong_declared_shape_classifier``, which passes only the plain checker.
All of them run on the onnxruntime CPU provider.

Run ``python -m faceaudit.testing.zoo [folder]`` to write the ``ZOO`` models
as ``<stem>.onnx`` files (default folder: ``build/zoo``).
"""

from __future__ import annotations

import functools
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "ZOO",
    "Layout",
    "dynamic_quantized_classifier",
    "hardcoded_batch_classifier",
    "iresnet_embedding",
    "linear_classifier",
    "nan_classifier",
    "planted_region_classifier",
    "planted_region_embedding",
    "qlinear_classifier",
    "save_with_external_data",
    "tf_style_classifier",
    "two_output_model",
    "vgg_classifier",
    "write_zoo",
    "wrong_declared_shape_classifier",
]

Layout = Literal["NCHW", "NHWC"]
Dim = int | str

OPSET = 17
IR_VERSION = 8
_PRODUCER = "faceaudit.testing.zoo"


def _input(name: str, shape: Sequence[Dim]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _image_input(
    layout: Layout, batch: Dim, channels: int, height: int, width: int
) -> onnx.ValueInfoProto:
    if layout == "NCHW":
        return _input("input", [batch, channels, height, width])
    if layout == "NHWC":
        return _input("input", [batch, height, width, channels])
    raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")


class _GraphBuilder:
    """Collects nodes and seeded float32 initializers for one graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def he(self, shape: Sequence[int], fan_in: int) -> np.ndarray:
        """He-normal weights: std = sqrt(2 / fan_in)."""
        return self.rng.normal(0.0, np.sqrt(2.0 / fan_in), tuple(shape)).astype(np.float32)

    def small(self, shape: Sequence[int]) -> np.ndarray:
        """Small random values for biases and offsets."""
        return self.rng.normal(0.0, 0.1, tuple(shape)).astype(np.float32)

    def const(self, value: np.ndarray | np.generic, name: str | None = None) -> str:
        name = name or self._fresh("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op_n(self, op_type: str, inputs: Sequence[str], n_outputs: int, **attrs: Any) -> list[str]:
        """Add a node with ``n_outputs`` auto-named outputs."""
        node_name = self._fresh(op_type)
        outputs = [f"{node_name}_out{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=node_name, **attrs))
        return outputs

    def op(
        self, op_type: str, inputs: Sequence[str], *, output: str | None = None, **attrs: Any
    ) -> str:
        """Add a single-output node; ``output`` names its result, else it is auto-named."""
        (result,) = self.op_n(op_type, inputs, 1, **attrs)
        if output is None:
            return result
        self.nodes[-1].output[0] = output
        return output

    def conv(self, x: str, c_in: int, c_out: int) -> str:
        """Same-padded 3x3 convolution with bias."""
        w = self.const(self.he([c_out, c_in, 3, 3], c_in * 9))
        b = self.const(self.small([c_out]))
        return self.op("Conv", [x, w, b], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def batch_norm(self, x: str, channels: int) -> str:
        """BatchNormalization with non-trivial statistics (positive variance)."""
        scale = self.const(self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        bias = self.const(self.small([channels]))
        mean = self.const(self.small([channels]))
        var = self.const(self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def gemm(
        self,
        x: str,
        f_in: int,
        f_out: int,
        *,
        output: str | None = None,
        weight: str | None = None,
        bias: str | None = None,
    ) -> str:
        """Fully connected layer ``x @ W.T + b`` with W of shape [f_out, f_in]."""
        w = self.const(self.he([f_out, f_in], f_in), weight)
        b = self.const(self.small([f_out]), bias)
        return self.op("Gemm", [x, w, b], output=output, transB=1)

    def model(
        self,
        name: str,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        *,
        producer: str = _PRODUCER,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name, list(inputs), list(outputs), initializer=self.initializers
        )
        return helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=producer,
        )


def _quantize_uint8(w: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """Asymmetric per-tensor uint8 quantisation whose range includes 0."""
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zero_point = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
    q = np.clip(np.round(w / scale) + zero_point, 0, 255).astype(np.uint8)
    return q, scale, zero_point


def _quantize_int8_symmetric(
    w: np.ndarray, axis: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation, per tensor or per slice along ``axis``."""
    if axis is None:
        scale = np.float32(np.abs(w).max() / 127.0)
        return np.clip(np.round(w / scale), -127, 127).astype(np.int8), np.asarray(scale)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=reduce) / 127.0).astype(np.float32)
    bshape = [-1 if i == axis else 1 for i in range(w.ndim)]
    q = np.clip(np.round(w / scale.reshape(bshape)), -127, 127).astype(np.int8)
    return q, scale


def linear_classifier(
    *,
    height: int = 8,
    width: int = 8,
    channels: int = 3,
    classes: int = 5,
    layout: Layout = "NCHW",
    seed: int = 0,
) -> onnx.ModelProto:
    """Flatten + Gemm with initializers ``W`` [classes, C*H*W] (transB=1) and ``b``.

    The input is flattened as laid out, so for either layout the reference is
    ``x.reshape(N, -1) @ W.T + b``. Output ``logits`` [N, classes].
    """
    g = _GraphBuilder(seed)
    inp = _image_input(layout, "N", channels, height, width)
    flat = g.op("Flatten", ["input"], axis=1)
    g.gemm(flat, channels * height * width, classes, output="logits", weight="W", bias="b")
    return g.model("linear_classifier", [inp], [_input("logits", ["N", classes])])


def vgg_classifier(
    *,
    height: int = 32,
    width: int = 32,
    channels: int = 3,
    classes: int = 10,
    width_mult: int = 8,
    softmax: bool = False,
    layout: Layout = "NCHW",
    batch: Dim = "N",
    seed: int = 0,
) -> onnx.ModelProto:
    """VGG-style CNN: two [Conv3x3-Relu-MaxPool2x2] stages, Flatten, Gemm.

    Output is ``logits``, or ``probabilities`` when ``softmax`` appends a
    Softmax(axis=1). ``layout="NHWC"`` takes [N, H, W, C] followed by the
    Transpose(perm=[0, 3, 1, 2]) that tf2onnx emits. ``channels=1`` gives a
    greyscale model, and an int ``batch`` fixes the batch size, as exports
    without dynamic axes do. ``height`` and ``width`` must be multiples of 4.
    """
    if height % 4 or width % 4:
        raise ValueError(f"height and width must be multiples of 4, got {height}x{width}")
    g = _GraphBuilder(seed)
    inp = _image_input(layout, batch, channels, height, width)
    x = "input" if layout == "NCHW" else g.op("Transpose", ["input"], perm=[0, 3, 1, 2])
    c1, c2 = width_mult, 2 * width_mult
    for c_in, c_out in ((channels, c1), (c1, c2)):
        x = g.op("Relu", [g.conv(x, c_in, c_out)])
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x], axis=1)
    out = "probabilities" if softmax else "logits"
    x = g.gemm(x, c2 * (height // 4) * (width // 4), classes, output=None if softmax else out)
    if softmax:
        g.op("Softmax", [x], output=out, axis=1)
    return g.model("vgg_classifier", [inp], [_input(out, [batch, classes])])


def vgg16_classifier(
    *,
    height: int = 112,
    width: int = 112,
    classes: int = 100,
    width_div: int = 4,
    seed: int = 0,
) -> onnx.ModelProto:
    """VGG16 topology (VGG-Face's): five blocks of 2, 2, 3, 3, 3 [Conv3x3-Relu], each then MaxPool2x2,
    Flatten, Gemm-Relu, Gemm-Relu, Gemm to ``logits``.

    Channels are VGG16's 64, 128, 256, 512, 512 divided by ``width_div`` (4: about 0.24 GMAC per
    112×112 image, a convolution-dominated network like a real face model, unlike
    ``vgg_classifier``, whose cost is half its Gemm); the hidden Gemms have 4096 / ``width_div``
    units. ``height`` and ``width`` are at least 32 (pools floor: 112 px ends at 3×3). Convolution names follow VGG16
    (``conv1_1`` … ``conv5_3``, Relu outputs ``relu1_1`` …), so a layer can be named as in the papers.
    """
    if min(height, width) < 32:
        raise ValueError(f"height and width must be at least 32, got {height}x{width}")
    g = _GraphBuilder(seed)
    x, c_in = "input", 3
    for block, (convs, c_out) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)), start=1):
        c_out //= width_div
        for i in range(1, convs + 1):
            conv = g.op("Conv", [x, g.const(g.he([c_out, c_in, 3, 3], c_in * 9)), g.const(g.small([c_out]))],
                        output=f"conv{block}_{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x, c_in = g.op("Relu", [conv], output=f"relu{block}_{i}"), c_out
        x = g.op("MaxPool", [x], output=f"pool{block}", kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x], axis=1)
    hidden = 4096 // width_div
    x = g.op("Relu", [g.gemm(x, c_in * (height // 32) * (width // 32), hidden)])
    x = g.op("Relu", [g.gemm(x, hidden, hidden)])
    g.gemm(x, hidden, classes, output="logits")
    return g.model("vgg16_classifier", [_image_input("NCHW", "N", 3, height, width)], [_input("logits", ["N", classes])])


def iresnet_embedding(
    *,
    height: int = 32,
    width: int = 32,
    dim: int = 16,
    normalize: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """IResNet-style face embedder (ArcFace/InsightFace exports).

    Conv3x3-BatchNorm-PRelu (per-channel slope [C, 1, 1]), one residual block
    [Conv-BN-PRelu-Conv-BN] + Add, then GlobalAveragePool-Flatten-Gemm to the
    output ``embedding`` [N, dim]. ``normalize`` adds LpNormalization(axis=1, p=2),
    as some exports do inside the graph.
    """
    channels = 8
    g = _GraphBuilder(seed)

    def prelu(x: str) -> str:
        slope = g.rng.uniform(0.05, 0.3, (channels, 1, 1)).astype(np.float32)
        return g.op("PRelu", [x, g.const(slope)])

    stem = prelu(g.batch_norm(g.conv("input", 3, channels), channels))
    y = prelu(g.batch_norm(g.conv(stem, channels, channels), channels))
    y = g.batch_norm(g.conv(y, channels, channels), channels)
    x = g.op("Add", [y, stem])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    x = g.gemm(x, channels, dim, output=None if normalize else "embedding")
    if normalize:
        g.op("LpNormalization", [x], output="embedding", axis=1, p=2)
    return g.model(
        "iresnet_embedding",
        [_input("input", ["N", 3, height, width])],
        [_input("embedding", ["N", dim])],
    )


def se_embedding(*, height: int = 32, width: int = 32, channels: int = 8, dim: int = 16, seed: int = 0
                 ) -> onnx.ModelProto:
    """IResNet-SE-style face embedder: Conv-BN-PRelu stem; one residual block whose branch is gated by
    squeeze-excitation (ReduceMean over H, W → Conv1x1 → Relu → Conv1x1 → Sigmoid → Mul); Add;
    GlobalAveragePool, Flatten, Gemm; the embedding normalised in the graph by ReduceL2 + Div, as some
    exports do. Output ``embedding`` [N, dim]."""
    g = _GraphBuilder(seed)

    def prelu(x: str) -> str:
        return g.op("PRelu", [x, g.const(g.rng.uniform(0.05, 0.3, (channels, 1, 1)).astype(np.float32))])

    def pointwise(x: str, c_in: int, c_out: int) -> str:
        return g.op("Conv", [x, g.const(g.he([c_out, c_in, 1, 1], c_in)), g.const(g.small([c_out]))], kernel_shape=[1, 1])

    stem = prelu(g.batch_norm(g.conv("input", 3, channels), channels))
    branch = g.batch_norm(g.conv(prelu(g.conv(stem, channels, channels)), channels, channels), channels)
    squeezed = g.op("ReduceMean", [branch], axes=[2, 3], keepdims=1)
    gate = g.op("Sigmoid", [pointwise(g.op("Relu", [pointwise(squeezed, channels, 4)]), 4, channels)])
    x = g.op("Add", [g.op("Mul", [branch, gate]), stem])
    x = g.gemm(g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1), channels, dim)
    norm = g.op("ReduceL2", [x], axes=[1], keepdims=1)
    g.op("Div", [x, norm], output="embedding")
    return g.model("se_embedding", [_input("input", ["N", 3, height, width])], [_input("embedding", ["N", dim])])


def lightcnn_embedding(*, height: int = 32, width: int = 32, channels: int = 8, dim: int = 16, seed: int = 0
                       ) -> onnx.ModelProto:
    """LightCNN-style face embedder (Wang et al. 2025's LCNN9 family): max-feature-map (MFM) activations,
    no ReLU, so responses are signed.

    Conv3x3 (2C) → Split into halves → Max → MaxPool 2 → Conv3x3 (2C) → two Slices → Max (the MFM as
    older exporters write it) → MaxPool 2 → Pad 1 (constant) → Conv3x3 without padding → Flatten →
    Gemm (2·dim) → Split → Max to the output ``embedding`` [N, dim]. ``height`` and ``width`` must be
    multiples of 4.
    """
    if height % 4 or width % 4:
        raise ValueError(f"height and width must be multiples of 4, got {height}x{width}")
    g = _GraphBuilder(seed)

    def halves(x: str, size: int) -> list[str]:
        return g.op_n("Split", [x, g.const(np.array([size, size], dtype=np.int64))], 2, axis=1)

    x = g.op("Max", halves(g.conv("input", 3, 2 * channels), channels))
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    y = g.conv(x, channels, 2 * channels)
    low, high = (g.op("Slice", [y, g.const(np.array([a], dtype=np.int64)), g.const(np.array([b], dtype=np.int64)),
                                g.const(np.array([1], dtype=np.int64))])
                 for a, b in ((0, channels), (channels, 2 * channels)))
    x = g.op("MaxPool", [g.op("Max", [low, high])], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Pad", [x, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64))], mode="constant")
    w = g.const(g.he([channels, channels, 3, 3], channels * 9))
    x = g.op("Flatten", [g.op("Conv", [x, w, g.const(g.small([channels]))], kernel_shape=[3, 3])], axis=1)
    x = g.gemm(x, channels * (height // 4) * (width // 4), 2 * dim)
    g.op("Max", halves(x, dim), output="embedding")
    return g.model("lightcnn_embedding", [_input("input", ["N", 3, height, width])], [_input("embedding", ["N", dim])])


def hardcoded_batch_classifier(
    *, height: int = 16, width: int = 16, classes: int = 4, seed: int = 0
) -> onnx.ModelProto:
    """Batch-1 classifier whose Reshape target is the constant [1, -1].

    This copies exporters that bake the traced batch size into the graph.
    If the input's batch dim is made symbolic and a batch of 2 is fed, the
    Reshape folds the batch into the features and the Gemm fails.
    """
    channels = 4
    g = _GraphBuilder(seed)
    x = g.op("Relu", [g.conv("input", 3, channels)])
    x = g.op("Reshape", [x, g.const(np.array([1, -1], dtype=np.int64), "reshape_shape")])
    g.gemm(x, channels * height * width, classes, output="logits")
    return g.model(
        "hardcoded_batch_classifier",
        [_input("input", [1, 3, height, width])],
        [_input("logits", [1, classes])],
    )


def _small_trunk(g: _GraphBuilder, x: str, channels: int) -> str:
    """Conv3x3-Relu-GlobalAveragePool-Flatten: NCHW [N, 3, H, W] -> [N, channels]."""
    x = g.op("Relu", [g.conv(x, 3, channels)])
    return g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)


def tf_style_classifier(
    *, height: int = 16, width: int = 16, classes: int = 4, seed: int = 0
) -> onnx.ModelProto:
    """tf2onnx-style classifier with TensorFlow names and an NHWC input.

    The input ``input_1:0`` [unk__189, H, W, 3] is transposed to NCHW and goes
    through Conv-Relu-GlobalAveragePool-Flatten-Gemm. The output has the
    numeric name ``516`` and shape [unk__190, classes]: its batch dim_param
    differs from the input's.
    """
    channels = 8
    g = _GraphBuilder(seed)
    x = g.op("Transpose", ["input_1:0"], perm=[0, 3, 1, 2])
    g.gemm(_small_trunk(g, x, channels), channels, classes, output="516")
    return g.model(
        "tf_style_classifier",
        [_input("input_1:0", ["unk__189", height, width, 3])],
        [_input("516", ["unk__190", classes])],
        producer="tf2onnx",
    )


def two_output_model(*, height: int = 16, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Model with two numerically named outputs, so which one to read is ambiguous.

    ``516`` is an embedding [N, 8] and ``517`` holds logits [N, 3] computed
    from that embedding.
    """
    channels = 8
    g = _GraphBuilder(seed)
    emb = g.gemm(_small_trunk(g, "input", channels), channels, 8, output="516")
    g.gemm(emb, 8, 3, output="517")
    return g.model(
        "two_output_model",
        [_input("input", ["N", 3, height, width])],
        [_input("516", ["N", 8]), _input("517", ["N", 3])],
    )


def wrong_declared_shape_classifier(
    *, height: int = 16, width: int = 16, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """Classifier that declares output ``logits`` as [N, 3] but returns [N, classes].

    This copies graphs whose output metadata was edited by hand. The model
    passes only the plain ``onnx.checker.check_model(model)``. With
    ``full_check=True`` the strict shape inference rejects the mismatch.
    onnxruntime logs a MergeShapeInfo warning when it creates the session,
    falls back to a lenient merge and reports the inferred [N, classes] as the
    output shape. It returns the real [N, classes] array.
    """
    channels = 8
    g = _GraphBuilder(seed)
    g.gemm(_small_trunk(g, "input", channels), channels, classes, output="logits")
    model = g.model(
        "wrong_declared_shape_classifier",
        [_input("input", ["N", 3, height, width])],
        [_input("logits", ["N", classes])],
    )
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    return model


def dynamic_quantized_classifier(
    *, height: int = 16, width: int = 16, classes: int = 4, seed: int = 0
) -> onnx.ModelProto:
    """Graph in the style of onnxruntime ``quantize_dynamic``: integer Conv and MatMul.

    The chain is DynamicQuantizeLinear -> ConvInteger (uint8 weights) -> Cast
    -> Mul(x_scale * w_scale) -> Add bias -> Relu -> Flatten ->
    DynamicQuantizeLinear -> MatMulInteger (int8 weights) -> Cast -> Mul ->
    Add -> ``logits``. The activation scale is computed over the whole batch
    tensor, so one image's logits shift slightly with the rest of the batch.
    """
    channels = 4
    g = _GraphBuilder(seed)

    w_conv, w_conv_scale, w_conv_zp = _quantize_uint8(g.he([channels, 3, 3, 3], 3 * 9))
    x_q, x_scale, x_zp = g.op_n("DynamicQuantizeLinear", ["input"], 3)
    acc = g.op(
        "ConvInteger",
        [x_q, g.const(w_conv), x_zp, g.const(w_conv_zp)],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    scale = g.op("Mul", [x_scale, g.const(w_conv_scale)])
    x = g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), scale])
    x = g.op("Add", [x, g.const(g.small([channels, 1, 1]))])
    x = g.op("Flatten", [g.op("Relu", [x])], axis=1)

    features = channels * height * width
    w_fc, w_fc_scale = _quantize_int8_symmetric(g.he([features, classes], features))
    a_q, a_scale, a_zp = g.op_n("DynamicQuantizeLinear", [x], 3)
    acc = g.op("MatMulInteger", [a_q, g.const(w_fc), a_zp, g.const(np.int8(0))])
    scale = g.op("Mul", [a_scale, g.const(w_fc_scale)])
    x = g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), scale])
    g.op("Add", [x, g.const(g.small([classes]))], output="logits")
    return g.model(
        "dynamic_quantized_classifier",
        [_input("input", ["N", 3, height, width])],
        [_input("logits", ["N", classes])],
        producer="onnx.quantize",
    )


def qlinear_classifier(
    *, height: int = 16, width: int = 16, classes: int = 4, seed: int = 0
) -> onnx.ModelProto:
    """Statically quantised classifier in QOperator format; batch independent.

    QuantizeLinear (scale 1/255, uint8) -> QLinearConv (per-channel int8
    weights, int32 bias) -> DequantizeLinear -> Relu -> GlobalAveragePool ->
    Flatten -> Gemm -> ``logits``. The output quantisation range is taken from
    the conv's bounds over inputs in [0, 1].
    """
    channels = 8
    g = _GraphBuilder(seed)

    x_scale = np.float32(1.0 / 255.0)
    w = g.he([channels, 3, 3, 3], 3 * 9)
    b = g.small([channels])
    w_q, w_scale = _quantize_int8_symmetric(w, axis=0)
    b_q = np.round(b / (x_scale * w_scale)).astype(np.int32)
    # Conv output range for inputs in [0, 1] (zero padding included).
    per_out = w.reshape(channels, -1)
    lo = float(min((np.minimum(per_out, 0).sum(axis=1) + b).min(), 0.0))
    hi = float(max((np.maximum(per_out, 0).sum(axis=1) + b).max(), 0.0))
    y_scale = np.float32((hi - lo) / 255.0)
    y_zp = np.uint8(np.clip(np.round(-lo / y_scale), 0, 255))

    xs, xz = g.const(x_scale), g.const(np.uint8(0))
    ys, yz = g.const(y_scale), g.const(y_zp)
    x_q = g.op("QuantizeLinear", ["input", xs, xz])
    y_q = g.op(
        "QLinearConv",
        [
            x_q,
            xs,
            xz,
            g.const(w_q),
            g.const(w_scale),
            g.const(np.zeros(channels, np.int8)),
            ys,
            yz,
            g.const(b_q),
        ],
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    x = g.op("Relu", [g.op("DequantizeLinear", [y_q, ys, yz])])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    g.gemm(x, channels, classes, output="logits")
    return g.model(
        "qlinear_classifier",
        [_input("input", ["N", 3, height, width])],
        [_input("logits", ["N", classes])],
        producer="onnx.quantize",
    )


def nan_classifier(*, height: int = 8, width: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Classifier whose ``logits`` [N, 2] are NaN for dark images.

    The result is ``Gemm(Flatten(x)) + Sqrt(mean(x) - 0.5)``, where the mean
    of each image is taken over C, H and W in float32 by ReduceMean. Both
    logits of an image are NaN when its mean input value is below 0.5. They
    are finite when the mean is 0.5 or more and the input is finite.
    This copies numerically unstable exports such as a log or sqrt of an
    unclamped value.
    """
    g = _GraphBuilder(seed)
    logits = g.gemm(g.op("Flatten", ["input"], axis=1), 3 * height * width, 2)
    mean = g.op("ReduceMean", ["input"], axes=[1, 2, 3], keepdims=1)
    root = g.op("Sqrt", [g.op("Sub", [mean, g.const(np.float32(0.5))])])
    g.op("Add", [logits, g.op("Flatten", [root], axis=1)], output="logits")
    return g.model(
        "nan_classifier",
        [_input("input", ["N", 3, height, width])],
        [_input("logits", ["N", 2])],
    )


Box = tuple[int, int, int, int]  # (top, bottom, left, right), bottom/right exclusive


def _region_mask(height: int, width: int, box: Box) -> np.ndarray:
    top, bottom, left, right = box
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(f"box {box} is not inside a {height}x{width} image")
    mask = np.zeros((1, 1, height, width), np.float32)
    mask[..., top:bottom, left:right] = 1.0
    return mask


def planted_region_classifier(
    *, height: int = 32, width: int = 32, box: Box = (8, 16, 20, 28), classes: int = 3, seed: int = 0
) -> onnx.ModelProto:
    """Classifier whose scores depend only on the pixels inside ``box``: planted ground truth.

    ``logits = Sigmoid(W · flatten(x ⊙ mask) / n + b)`` with non-negative W, so darkening any
    pixel inside the box can only lower every class score and pixels outside change nothing.
    A faithful saliency map puts its mass inside the box.
    """
    g = _GraphBuilder(seed)
    n = 3 * height * width
    masked = g.op("Mul", ["input", g.const(_region_mask(height, width, box))])
    flat = g.op("Flatten", [masked], axis=1)
    w = g.const((g.rng.uniform(0.0, 2.0, (classes, n)) / ((box[1] - box[0]) * (box[3] - box[2]))).astype(np.float32))
    b = g.const(np.full(classes, -1.0, np.float32))
    g.op("Sigmoid", [g.op("Gemm", [flat, w, b], transB=1)], output="probabilities")
    return g.model("planted_region_classifier", [_input("input", ["N", 3, height, width])],
                   [_input("probabilities", ["N", classes])])


def planted_region_embedding(
    *, height: int = 32, width: int = 32, box: Box = (8, 16, 20, 28), dim: int = 16, seed: int = 0
) -> onnx.ModelProto:
    """Embedding network whose embedding depends only on the pixels inside ``box``.

    ``embedding = W · flatten(x ⊙ mask) + b`` with Gaussian W: probe-to-mate similarity changes
    only when pixels inside the box change.
    """
    g = _GraphBuilder(seed)
    n = 3 * height * width
    masked = g.op("Mul", ["input", g.const(_region_mask(height, width, box))])
    flat = g.op("Flatten", [masked], axis=1)
    w = g.const(g.rng.normal(0.0, 1.0, (dim, n)).astype(np.float32))
    g.op("Gemm", [flat, w, g.const(g.small([dim]))], output="embedding", transB=1)
    return g.model("planted_region_embedding", [_input("input", ["N", 3, height, width])],
                   [_input("embedding", ["N", dim])])


ZOO: dict[str, Callable[[], onnx.ModelProto]] = {
    "vgg_classifier": vgg_classifier,
    "vgg_softmax_classifier": functools.partial(vgg_classifier, softmax=True),
    "vgg_fixed_batch": functools.partial(vgg_classifier, batch=1),
    "vgg_nhwc": functools.partial(vgg_classifier, layout="NHWC"),
    "vgg_greyscale": functools.partial(vgg_classifier, channels=1),
    "iresnet_embedding": iresnet_embedding,
    "iresnet_embedding_normalized": functools.partial(iresnet_embedding, normalize=True),
    "hardcoded_batch": hardcoded_batch_classifier,
    "tf_style": tf_style_classifier,
    "two_outputs": two_output_model,
    "wrong_declared_shape": wrong_declared_shape_classifier,
    "dynamic_quantized": dynamic_quantized_classifier,
    "qlinear": qlinear_classifier,
    "planted_region_classifier": planted_region_classifier,
    "planted_region_embedding": planted_region_embedding,
}
"""File stem -> zero-argument builder for a representative set of models."""


def write_zoo(folder: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Write every ``ZOO`` model to ``<folder>/<stem>.onnx``, creating the folder."""
    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, build in ZOO.items():
        path = out / f"{stem}.onnx"
        onnx.save_model(build(), path)
        paths.append(path)
    return paths


def save_with_external_data(
    model: onnx.ModelProto, path: str | os.PathLike[str], *, location: str = "weights.bin"
) -> None:
    """Save ``model`` to ``path`` and put all initializers in one external file.

    ``location`` is relative to the model's folder. An existing file there is
    replaced, because onnx would append to it. The caller's model is not
    modified.
    """
    data_file = pathlib.Path(path).parent / location
    data_file.unlink(missing_ok=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(
        copy,
        os.fspath(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )


if __name__ == "__main__":
    for written in write_zoo(sys.argv[1] if len(sys.argv) > 1 else "build/zoo"):
        print(written)
