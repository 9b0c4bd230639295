"""Pooled intermediate features of a model: the layers Zhong & Deng (2019) analyse, read in batches.

What it touches: the model's ONNX graph (a rewritten copy whose outputs are the chosen tensors, see
faceaudit.whitebox.instrument.expose_outputs) and one onnxruntime session on it, cached on the
prepared model. The user's own session is not used: it is pruned to the spec's output. The images
it runs are added to an open off-session pass meter (metrics.off_session_passes; the build's
one-image shape probe is not).

Layers:
    Named by the user (any float tensor computed from the input), or by default the stage outputs:
    for every spatial resolution of the rank-4 tensors between the input and the output, the last
    tensor computed at that resolution that every path from the input to the output runs through
    (no skip connection jumps it: a residual block's sum, not a tensor inside the block), in graph
    order the stage's output just before the next downsampling (or the final pooling); then every fully connected output (Gemm/MatMul, followed
    through an activation or BatchNormalization that is its only reader); then the spec's output.
    For a VGG this is close to the paper's pool1..pool5, fc6, fc7. Rank-4 intermediates are read as
    (N, C, H, W): ONNX Conv and Pool compute channels first whatever the model's input layout.
Pooling (per layer, per image):
    mean: global average over every axis after the channel axis (the issue's "pooled features").
    max: global maximum over the same axes.
    flatten: the whole tensor as one vector (the paper's, after Zeiler & Fergus: the layer's
    feature vector itself, which keeps where a feature fired).
    Rank-2 tensors are their own feature vector under every pooling.
Memory: images run in chunks sized so that the exposed activations of a chunk stay under
ACTIVATION_BYTES; callers that keep features of many images bound them with check_feature_bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from faceaudit.engine.prepare import PreparedModel
from faceaudit.engine.runtime import RuntimeOptions, Session
from faceaudit.errors import InvalidRequest, LimitExceeded, ModelOutputError, UnsupportedModel
from faceaudit.images.io import check_image_array
from faceaudit.images.preprocess import to_model_input
from faceaudit.methods.common import Progress
from faceaudit.metrics.off_session_passes import add_off_session_passes
from faceaudit.models.graph import make_batch_dynamic
from faceaudit.whitebox.instrument import expose_outputs

POOLINGS = ("mean", "max", "flatten")
ACTIVATION_BYTES = 64 << 20  # exposed activations alive per chunk
FEATURE_BYTES = 512 << 20  # features a whole analysis may keep (all images, all layers)
CACHED_EXTRACTORS = 4  # per model: one per (layers) selection
MAX_LAYERS = 256  # named layers per analysis (the default stage outputs are about ten)
# Ops that only rescale or rectify a fully connected output: the layer is read after them.
_FOLLOWED = frozenset({"Relu", "PRelu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "BatchNormalization"})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise InvalidRequest("pooling", f"{pooling!r} is not one of {', '.join(POOLINGS)}")


def check_layer_names(layers: tuple[str, ...]) -> None:
    """Option validation: a tuple of distinct, non-empty tensor names (empty = the default layers)."""
    if isinstance(layers, tuple) and len(layers) > MAX_LAYERS:
        raise InvalidRequest("layers", f"{len(layers):,} layers; at most {MAX_LAYERS} per analysis")
    if not isinstance(layers, tuple) or not all(isinstance(name, str) and name for name in layers):
        raise InvalidRequest("layers", f"{layers!r} must be a tuple of tensor names (empty for the default layers)")
    if len(set(layers)) != len(layers):
        raise InvalidRequest("layers", "names a tensor twice")


def pool(values: np.ndarray, pooling: str) -> np.ndarray:
    """(B, ...) activations → (B, D) float32 feature vectors (see the module docstring)."""
    check_pooling(pooling)
    batch = len(values)
    if values.ndim <= 2 or pooling == "flatten":
        return values.reshape(batch, -1).astype(np.float32, copy=False)
    axes = tuple(range(2, values.ndim))
    reduced = values.mean(axis=axes, dtype=np.float64) if pooling == "mean" else values.max(axis=axes)
    return reduced.astype(np.float32)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (B, D) feature vectors, in float64.

    Convention where the cosine is undefined: two all-zero vectors are identical (1); an all-zero
    vector against a non-zero one shares no direction with it (0).
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
    dot = np.einsum("ij,ij->i", a64, b64)
    both = (na > 0) & (nb > 0)
    cos = np.where(both, dot / np.where(both, na * nb, 1.0), np.where((na == 0) & (nb == 0), 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def check_images(images: Sequence[np.ndarray], model: PreparedModel, field: str, minimum: int = 1) -> list[np.ndarray]:
    """Model-sized float32 RGB images in [0, 255], at least `minimum` of them; the field named on error."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise InvalidRequest(field, f"expected images (N, H, W, 3), got an array of shape {images.shape}")
    elif not isinstance(images, Sequence):
        raise InvalidRequest(field, f"expected a sequence of images, got {type(images).__name__}")
    if len(images) < minimum:
        raise InvalidRequest(field, f"needs at least {minimum} image(s), got {len(images)}")
    expected = (model.spec.require("height"), model.spec.require("width"), 3)
    checked = []
    for i, raw in enumerate(images):
        image = check_image_array(raw, field=f"{field}[{i}]")
        if image.shape != expected:
            raise InvalidRequest(f"{field}[{i}]", f"expected a model-sized image of shape {expected}, got {image.shape}")
        checked.append(image)
    return checked


def check_feature_bytes(count: int, extractor: LayerFeatures, pooling: str) -> None:
    """LimitExceeded when keeping `count` images' features would exceed FEATURE_BYTES."""
    needed = count * extractor.feature_bytes(pooling)
    if needed > FEATURE_BYTES:
        raise LimitExceeded(
            f"pooling: keeping {pooling} features of {count} images needs {needed / 2**20:.0f} MiB, above "
            f"{FEATURE_BYTES / 2**20:.0f} MiB; use pooling 'mean', fewer layers or fewer images")


@dataclass(frozen=True)
class LayerFeatures:
    """A session whose outputs are the chosen layers; `run` returns their pooled features."""

    layers: tuple[str, ...]
    session: Session
    model: PreparedModel
    shapes: tuple[tuple[int, ...], ...]  # per layer, one image's activation shape (without the batch)

    @property
    def chunk(self) -> int:
        """Images per runtime call: the session's batch, lowered to keep activations under ACTIVATION_BYTES."""
        per_image = sum(4 * int(np.prod(shape)) for shape in self.shapes)
        return max(1, min(self.session.max_batch, ACTIVATION_BYTES // max(per_image, 1)))

    def dims(self, pooling: str) -> list[int]:
        """Feature length per layer under `pooling`."""
        return [int(np.prod(s)) if pooling == "flatten" or len(s) <= 1 else int(s[0]) for s in self.shapes]

    def feature_bytes(self, pooling: str) -> int:
        """Bytes of one image's features over all layers (float32)."""
        return 4 * sum(self.dims(pooling))

    def run(self, images: np.ndarray | Sequence[np.ndarray], pooling: str, *, progress: Progress | None = None,
            done: int = 0, total: int = 0) -> list[np.ndarray]:
        """Per layer, the (B, D) pooled features of model-sized RGB images (B, H, W, 3) in [0, 255].

        `progress(done + images run so far, total, "features")` after each chunk when given.
        """
        parts: list[list[np.ndarray]] = [[] for _ in self.layers]
        step = self.chunk
        for start in range(0, len(images), step):
            chunk = np.asarray(images[start : start + step], dtype=np.float32)
            outputs = self.session.run(to_model_input(chunk, self.model.spec))
            add_off_session_passes(len(chunk))  # a session of its own: no batcher sees these passes
            for k, (name, value) in enumerate(zip(self.layers, outputs)):
                if not np.isfinite(value).all():
                    raise ModelOutputError(f"layer {name!r} is NaN or infinite for an input image")
                parts[k].append(pool(value, pooling))
            if progress is not None:
                progress(done + start + len(chunk), total or len(images), "features")
        return [np.concatenate(p) if p else np.zeros((0, d), np.float32) for p, d in zip(parts, self.dims(pooling))]


def layer_features(model: PreparedModel, layers: tuple[str, ...] = ()) -> LayerFeatures:
    """The extractor for `layers` (default: the stage outputs), cached on the prepared model."""
    check_layer_names(layers)
    key = ("layer_features", layers)
    cache = model.derived
    if key in cache:
        cache[key] = cache.pop(key)  # most recently used last
        return cache[key]  # type: ignore[no-any-return]
    built = _build(model, layers)
    cache[key] = built
    for old in [k for k in cache if isinstance(k, tuple) and k[0] == "layer_features"][:-CACHED_EXTRACTORS]:
        del cache[old]
    return built


def _build(model: PreparedModel, layers: tuple[str, ...]) -> LayerFeatures:
    spec = model.spec
    input_name = spec.require("input_name")
    proto = model.loaded.proto
    if model.batch.mode == "rewritten":
        proto = make_batch_dynamic(proto, input_name)
    infos = _tensor_infos(proto)
    reachable = _downstream(proto, input_name)
    output = spec.output_name or proto.graph.output[0].name
    if layers:
        for name in layers:
            if name not in reachable:
                raise InvalidRequest("layers", f"{name!r} is not a tensor computed from the input {input_name!r}; "
                                               f"default layers: {', '.join(default_layers(proto, input_name, output))}")
            info = infos.get(name)
            if info is not None and info[0] not in _FLOAT_TYPES:
                raise InvalidRequest("layers", f"{name!r} is not a float tensor")
        chosen = list(layers)
    else:
        chosen = default_layers(proto, input_name, output)
        if not chosen:
            raise UnsupportedModel("no layer between the input and the output has a known shape; name the layers "
                                   "(tensor names) to analyse")
    exposed = expose_outputs(proto, chosen)
    runtime = RuntimeOptions(
        provider="cuda" if model.session.provider == "CUDAExecutionProvider" else "cpu",
        threads=model.session.threads, max_batch=model.session.max_batch,
    )
    session = Session(exposed, input_name, chosen, runtime, fixed_batch=model.batch.fixed_batch)
    probe = np.zeros((1, spec.require("height"), spec.require("width"), 3), np.float32)
    shapes = tuple(tuple(int(d) for d in value.shape[1:]) for value in session.run(to_model_input(probe, spec)))
    return LayerFeatures(tuple(chosen), session, model, shapes)


def default_layers(proto: onnx.ModelProto, input_name: str, output: str) -> list[str]:
    """The stage outputs between `input_name` and `output` (see the module docstring), in graph order."""
    infos = _tensor_infos(proto)
    upstream = _upstream(proto, output)
    between = _downstream(proto, input_name) & upstream
    nodes = [n for n in proto.graph.node if n.output and n.output[0] in between]
    cuts = _cuts(nodes, input_name)
    last_at: dict[tuple[int, int], str] = {}
    for node in nodes:
        elem, dims = infos.get(node.output[0], (0, None))
        if node.output[0] not in cuts:
            continue
        if elem in _FLOAT_TYPES and dims is not None and len(dims) == 4 and all(isinstance(d, int) for d in dims[2:]):
            last_at.pop((dims[2], dims[3]), None)  # re-inserted last: dict order = order of each stage's end
            last_at[(dims[2], dims[3])] = node.output[0]
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    dense = []
    for node in nodes:
        dims = infos.get(node.output[0], (0, None))[1]
        if node.op_type in ("Gemm", "MatMul") and dims is not None and len(dims) == 2:
            name = node.output[0]
            while len(readers.get(name, [])) == 1 and readers[name][0].op_type in _FOLLOWED and name != output:
                name = readers[name][0].output[0]
            if name in upstream and name not in dense:
                dense.append(name)
    order = {n.output[0]: i for i, n in enumerate(proto.graph.node) if n.output}
    spatial = sorted(last_at.values(), key=order.__getitem__)
    chosen = spatial + [n for n in sorted(dense, key=order.__getitem__) if n not in spatial]
    return chosen + ([output] if output not in chosen and output in between else [])


def _cuts(nodes: list[onnx.NodeProto], input_name: str) -> set[str]:
    """Outputs every path from the input to the output runs through (no skip connection jumps them).

    Node i's output is a cut when no tensor computed before it (the input included) is read after it.
    """
    index = {input_name: -1} | {name: i for i, node in enumerate(nodes) for name in node.output}
    last_read = {name: index[name] for name in index}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name in last_read:
                last_read[name] = max(last_read[name], i)
    cuts, reach = set(), last_read[input_name]
    for i, node in enumerate(nodes):
        if reach <= i:
            cuts.add(node.output[0])
        reach = max([reach, *(last_read[name] for name in node.output if name in last_read)])
    return cuts


def _tensor_infos(proto: onnx.ModelProto) -> dict[str, tuple[int, tuple[int | str | None, ...] | None]]:
    """Element type and dims of every tensor onnx shape inference can type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        inferred = proto
    infos: dict[str, tuple[int, tuple[int | str | None, ...] | None]] = {}
    g = inferred.graph
    for value in [*g.input, *g.value_info, *g.output]:
        t = value.type.tensor_type
        dims = None
        if t.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        infos[value.name] = (t.elem_type, dims)
    return infos


def _downstream(proto: onnx.ModelProto, source: str) -> set[str]:
    """Tensors computed (directly or not) from `source`; nodes are in topological order (ONNX requires it)."""
    reached = {source}
    for node in proto.graph.node:
        if any(name in reached for name in node.input):
            reached.update(name for name in node.output if name)
    reached.discard(source)
    return reached


def _upstream(proto: onnx.ModelProto, target: str) -> set[str]:
    """`target` and every tensor it is computed from."""
    producers = {name: node for node in proto.graph.node for name in node.output}
    needed, stack = {target}, [target]
    while stack:
        node = producers.get(stack.pop())
        for name in node.input if node is not None else ():
            if name and name not in needed:
                needed.add(name)
                stack.append(name)
    return needed
