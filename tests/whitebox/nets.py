"""Small random ONNX networks (onnx.helper, IR 8) that together use every white-box rule, and closed-form cases.

For finite differences: `conv_net` runs in float32 (onnxruntime has no float64 Conv or AveragePool
kernels) and is piecewise linear, so central differences are exact between kinks; `dense_net`,
`norm_net`, `block_net`, `opset11_net` and `trans_a_net` run in float64. `RULE_COVERAGE` lists which network
exercises which operator; a test checks that the union is every rule in the table.
For excitation backprop: `relu_net` (non-negative activations, optionally residual). For the
methods' closed forms: `mlp_classifier` (guided backprop, deconvnet), `cam_classifier` (Grad-CAM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET, IR_VERSION = 17, 8


class Net:
    """Collects nodes and random initializers of one dtype; `op` appends a node and returns its output."""

    def __init__(self, seed: int, dtype: type = np.float32) -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, value: Any, dtype: Any = None) -> str:
        name = f"c{len(self.initializers)}"
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def normal(self, *shape: int, scale: float = 0.5) -> str:
        return self.const(self.rng.normal(0.0, scale, shape))

    def uniform(self, low: float, high: float, *shape: int) -> str:
        return self.const(self.rng.uniform(low, high, shape))

    def ints(self, values: Sequence[int]) -> str:
        return self.const(values, np.int64)

    def op(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        name = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def batch_norm(self, x: str, channels: int) -> str:
        return self.op("BatchNormalization", [x, self.uniform(0.5, 1.5, channels), self.normal(channels, scale=0.1),
                                              self.normal(channels, scale=0.1), self.uniform(0.5, 1.5, channels)])

    def model(self, x_shape: Sequence[Any], classes: int | list[int], opset: int = OPSET) -> onnx.ModelProto:
        """The model from input "x" to the last node's output, renamed "y" (N, classes)."""
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))
        self.nodes[-1].output[0] = "y"
        graph = helper.make_graph(self.nodes, "net", [helper.make_tensor_value_info("x", elem, list(x_shape))],
                                  [helper.make_tensor_value_info("y", elem, ["N", *np.atleast_1d(classes).tolist()])],
                                  initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
        onnx.checker.check_model(model, full_check=True)
        return model


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """float32 (N, 3, 9, 10) → (N, 5): every Conv geometry, BN (foldable and not), pools, residual Add."""
    n = Net(seed)
    # Asymmetric pads, stride 2 × 1, dilation 1 × 2, with bias, then a foldable BN.
    x = n.op("Conv", ["x", n.normal(4, 3, 3, 3), n.normal(4, scale=0.1)], kernel_shape=[3, 3],
             pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])
    x = n.op("Relu", [n.batch_norm(x, 4)])  # (4, 6, 6)
    # Depthwise, SAME_UPPER with an odd total padding (kernel 2 × 3, stride 2), no bias.
    x = n.op("Conv", [x, n.normal(4, 1, 2, 3)], kernel_shape=[2, 3], group=4, auto_pad="SAME_UPPER", strides=[2, 2])
    x = n.op("PRelu", [x, n.uniform(0.1, 0.3, 4, 1, 1)])  # (4, 3, 3)
    # Two groups, SAME_LOWER with odd/even totals (kernel 2 × 3; onnxruntime refuses dilated SAME).
    x = n.op("Conv", [x, n.normal(6, 2, 2, 3), n.normal(6, scale=0.1)], kernel_shape=[2, 3], group=2,
             auto_pad="SAME_LOWER")
    skip = n.op("Clip", [x, n.const(0.0), n.const(0.5)])  # ReLU6-style, saturating at 0.5
    branch = n.op("LeakyRelu", [n.op("Conv", [skip, n.normal(6, 6, 1, 1)], kernel_shape=[1, 1], auto_pad="VALID")],
                  alpha=0.2)
    x = n.batch_norm(n.op("Add", [branch, skip]), 6)  # residual; BN after an Add is not foldable
    x = n.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)  # (6, 2, 2)
    x = n.op("AveragePool", [x], kernel_shape=[2, 2], pads=[0, 1, 1, 0])  # (6, 2, 3), pads not counted
    # Pads counted, but not the cells beyond them that ceil_mode's last window reaches: (6, 2, 2).
    x = n.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 0, 0, 0], ceil_mode=1,
             count_include_pad=1)
    x = n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1)
    n.op("Gemm", [x, n.normal(5, 6), n.normal(5, scale=0.1)], transB=1, alpha=0.7, beta=0.5)
    return n.model(["N", 3, 9, 10], 5)


def dense_net(seed: int = 0) -> onnx.ModelProto:
    """float64 (N, 3, 4, 4) → (N, 6) probabilities: Gemm/MatMul variants, constants arithmetic, moves, Softmax."""
    n = Net(seed, np.float64)
    x = n.op("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])  # (3, 2, 2)
    x = n.op("PRelu", [n.batch_norm(x, 3), n.uniform(0.1, 0.3, 3, 1, 1)])
    x = n.op("Flatten", [x], axis=1)  # (12,)
    x = n.op("Sigmoid", [n.op("Gemm", [x, n.normal(10, 12), n.normal(10)], transB=1, alpha=1.3, beta=0.7)])
    x = n.op("Gemm", [x, n.normal(10, 8, scale=1.0)])  # transB=0, no C (transA: see trans_a_net)
    x = n.op("Mul", [x, n.normal(8, scale=1.0)])
    x = n.op("Add", [n.normal(1, 8), x])
    x = n.op("Sub", [n.normal(8), x])  # constant minus x: weight −1
    x = n.op("Sub", [x, n.normal(8)])
    x = n.op("Div", [x, n.uniform(0.5, 2.0, 8)])
    x = n.op("Squeeze", [n.op("Unsqueeze", [x, n.ints([2])]), n.ints([2])])
    x = n.op("Reshape", [x, n.ints([0, 2, 4])])
    x = n.op("Transpose", [x], perm=[0, 2, 1])  # (4, 2)
    x = n.op("MatMul", [x, n.normal(2, 3, scale=1.0)])  # (4, 3), constant on the right
    x = n.op("MatMul", [n.normal(5, 4, scale=1.0), x])  # (5, 3), constant on the left
    x = n.op("Dropout", [n.op("Identity", [n.op("Flatten", [x], axis=1)])])
    x = n.op("Clip", [x, n.const(-0.3), n.const(1.5)])  # before the Relu: onnxruntime cannot fuse Relu→Clip in float64
    x = n.op("Relu", [n.op("LeakyRelu", [x], alpha=0.1)])
    x = n.op("LpNormalization", [n.op("Gemm", [x, n.normal(15, 6, scale=1.0)])], axis=1, p=2)
    n.op("Softmax", [n.op("Mul", [x, n.const(3.0)])], axis=1)
    return n.model(["N", 3, 4, 4], 6)


def norm_net(seed: int = 0) -> onnx.ModelProto:
    """float64 (N, 6) → (N, 4): Add of two computed tensors with broadcasting, LpNormalization p=1."""
    n = Net(seed, np.float64)
    a = n.op("Gemm", ["x", n.normal(6, 4, scale=1.0)])
    b = n.op("MatMul", ["x", n.normal(6, 1, scale=1.0)])  # (N, 1), broadcast over a's 4 columns
    x = n.op("LpNormalization", [n.op("Add", [a, b])], axis=1, p=1)
    n.op("Add", [x, x])  # the same tensor twice
    return n.model(["N", 6], 4)


def opset11_net(seed: int = 0) -> onnx.ModelProto:
    """float64 (N, 6) → (N, 2, 3) at opset 11, where Softmax(axis=1) normalises over all axes ≥ 1 together."""
    n = Net(seed, np.float64)
    x = n.op("MatMul", ["x", n.normal(6, 6, scale=1.0)])  # (onnxruntime has no float64 Clip before opset 12)
    n.op("Softmax", [n.op("Reshape", [x, n.ints([-1, 2, 3])])], axis=1)
    return n.model(["N", 6], [2, 3], opset=11)


def trans_a_net(seed: int = 0) -> onnx.ModelProto:
    """float64 (N, 4) → (N, 3) through Transpose and Gemm(transA=1): the transposed tensor has no batch
    axis first, so it cannot be an output of the engine's Session; tests run it with onnxruntime directly."""
    n = Net(seed, np.float64)
    n.op("Gemm", [n.op("Transpose", ["x"], perm=[1, 0]), n.normal(4, 3, scale=1.0), n.normal(3)], transA=1, alpha=0.5)
    return n.model(["N", 4], 3)


def block_net(seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """float64 (N, 4, 3, 3) → (N, 5) unit embeddings: the blocks of face networks built from two computed tensors.

    Concat and Split, max-feature-map (Max of two tensors), a squeeze-excitation gate (ReduceMean,
    Sigmoid, Mul of two tensors), constant Pad and a Slice with negative steps, Sub and Div of two
    tensors, a float Cast, and the embedding normalisation ReduceL2 + Expand + Div. At opset 18 ReduceMean,
    ReduceL2 and Pad read their axes from inputs.
    """
    n = Net(seed, np.float64)
    axes = (lambda values: {"axes": values}) if opset < 18 else (lambda values: {})
    axes_input = (lambda values: []) if opset < 18 else (lambda values: [n.ints(values)])
    h = n.op("Mul", ["x", n.normal(4, 1, 1, scale=1.0)])
    both = n.op("Concat", ["x", h], axis=1)  # (8, 3, 3)
    n.nodes.append(onnx.helper.make_node("Split", [both, n.ints([4, 4])], ["split_a", "split_b"], name="split", axis=1))
    a, b = "split_a", "split_b"
    mfm = n.op("Max", [a, n.op("Add", [b, n.normal(4, 1, 1)])])  # (4, 3, 3)
    squeezed = n.op("ReduceMean", [mfm, *axes_input([2, 3])], keepdims=1, **axes([2, 3]))  # (4, 1, 1)
    gate = n.op("Sigmoid", [n.op("Mul", [squeezed, n.normal(4, 1, 1, scale=1.0)])])
    gated = n.op("Mul", [mfm, gate])
    pad_inputs = [gated, n.ints([0, 0, 1, 0, 0, 0, 0, 2]), n.const(0.5)]
    if opset >= 18:  # pads of the two spatial axes only
        pad_inputs = [gated, n.ints([1, 0, 0, 2]), n.const(0.5), n.ints([2, 3])]
    padded = n.op("Pad", pad_inputs, mode="constant")  # (4, 4, 5)
    sliced = n.op("Slice", [padded, n.ints([3, 4]), n.ints([0, -100]), n.ints([2, 3]), n.ints([-1, -2])])  # (4, 3, 3)
    difference = n.op("Sub", [sliced, a])
    ratio = n.op("Div", [difference, n.op("Add", [n.op("Sigmoid", [b]), n.const(0.5)])])
    flat = n.op("Cast", [n.op("Flatten", [ratio], axis=1)], to=onnx.TensorProto.DOUBLE)
    embedding = n.op("Gemm", [flat, n.normal(5, 36, scale=0.3)], transB=1)
    norm = n.op("ReduceL2", [embedding, *axes_input([1])], keepdims=1, **axes([1]))
    n.op("Div", [embedding, n.op("Expand", [norm, n.ints([1, 5])])])  # as torch's F.normalize exports it
    return n.model(["N", 4, 3, 3], 5, opset=opset)


def relu_net(seed: int = 0, *, residual: bool = False) -> onnx.ModelProto:
    """float32 (N, 3, 12, 12) → (N, 4) softmax of a ReLU network: non-negative activations, as EBP assumes.

    Conv–Relu–MaxPool, strided Conv with asymmetric pads and a BN of positive scale, AveragePool,
    depthwise SAME_UPPER Conv, GlobalAveragePool, two Gemms. `residual` adds Add(h, Relu(Conv(h)))
    after the first stage.
    """
    n = Net(seed)
    x = n.op("Relu", [n.op("Conv", ["x", n.normal(4, 3, 3, 3), n.normal(4, scale=0.1)], kernel_shape=[3, 3],
                             pads=[1, 1, 1, 1])])
    x = n.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])  # (4, 6, 6)
    if residual:
        branch = n.op("Relu", [n.op("Conv", [x, n.normal(4, 4, 3, 3)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
        x = n.op("Add", [x, branch])
    x = n.op("Conv", [x, n.normal(6, 4, 3, 3), n.normal(6, scale=0.1)], kernel_shape=[3, 3], strides=[2, 2],
             pads=[1, 0, 0, 1])
    x = n.op("Relu", [n.batch_norm(x, 6)])  # (6, 3, 3)
    x = n.op("AveragePool", [x], kernel_shape=[2, 2], strides=[1, 1])  # (6, 2, 2)
    x = n.op("Relu", [n.op("Conv", [x, n.normal(6, 1, 3, 3)], kernel_shape=[3, 3], group=6, auto_pad="SAME_UPPER")])
    x = n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1)
    x = n.op("Relu", [n.op("Gemm", [x, n.normal(8, 6, scale=1.0), n.normal(8, scale=0.1)], transB=1)])
    n.op("Softmax", [n.op("Gemm", [x, n.normal(4, 8, scale=1.0)], transB=1)], axis=1)
    return n.model(["N", 3, 12, 12], 4)


def mlp_classifier(seed: int = 0, *, size: int = 8, hidden: int = 16, classes: int = 4) -> onnx.ModelProto:
    """float32 (N, 3, size, size) → logits: Flatten, Gemm W1 (transB), Relu, Gemm W2 (transB).

    Initializers "W1", "b1", "W2" hold the weights, so tests can write the map in closed form.
    """
    n = Net(seed)
    features = 3 * size * size
    w1, b1 = n.rng.normal(0.0, 1.0 / np.sqrt(features), (hidden, features)), n.rng.normal(0.0, 0.1, hidden)
    w2 = n.rng.normal(0.0, 1.0, (classes, hidden))
    n.initializers += [numpy_helper.from_array(value.astype(np.float32), name)
                       for name, value in (("W1", w1), ("b1", b1), ("W2", w2))]
    x = n.op("Relu", [n.op("Gemm", [n.op("Flatten", ["x"], axis=1), "W1", "b1"], transB=1)])
    n.op("Gemm", [x, "W2"], transB=1)
    return n.model(["N", 3, size, size], classes)


def cam_classifier(seed: int = 0, *, size: int = 8, channels: int = 5, classes: int = 3) -> onnx.ModelProto:
    """float32 (N, 3, size, size) → logits: Conv (stride 2, pads 1) "features", GAP, Flatten, Gemm "W".

    Grad-CAM at "features" has the closed form relu(Σ_c W_kc · A_c) / (h·w) (Zhou et al.'s CAM).
    """
    n = Net(seed)
    n.initializers.append(numpy_helper.from_array(n.rng.normal(0.0, 1.0, (classes, channels)).astype(np.float32), "W"))
    n.op("Conv", ["x", n.normal(channels, 3, 3, 3)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    n.nodes[-1].output[0] = "features"
    n.op("Gemm", [n.op("Flatten", [n.op("GlobalAveragePool", ["features"])], axis=1), "W"], transB=1)
    return n.model(["N", 3, size, size], classes)


RULE_COVERAGE = {
    "conv_net": {"Conv", "BatchNormalization", "Relu", "PRelu", "Clip", "LeakyRelu", "Add", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Flatten", "Gemm"},
    "trans_a_net": {"Transpose", "Gemm"},
    "opset11_net": {"MatMul", "Reshape", "Softmax"},
    "dense_net": {"MaxPool", "BatchNormalization", "PRelu", "Flatten", "Gemm", "Sigmoid", "Transpose", "Mul", "Add",
                  "Sub", "Div", "Unsqueeze", "Squeeze", "Reshape", "MatMul", "Dropout", "Identity", "LeakyRelu", "Relu",
                  "Clip", "LpNormalization", "Softmax"},
    "norm_net": {"Gemm", "MatMul", "Add", "LpNormalization"},
    "block_net": {"Mul", "Concat", "Split", "Max", "Add", "ReduceMean", "Sigmoid", "Pad", "Slice", "Sub", "Div", "Cast",
                  "Flatten", "Gemm", "ReduceL2", "Expand"},
}
