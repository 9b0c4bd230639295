"""The instrumented model: pure rewrites, typed outputs, BN folding, the similarity head, seeds, layers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from faceaudit.engine.scorer import EmbeddingTarget, Scorer, embed
from faceaudit.errors import InvalidRequest
from faceaudit.images.preprocess import to_model_input
from faceaudit.testing import zoo
from faceaudit.whitebox import backward, instrument, instrument_graph
from faceaudit.whitebox.instrument import SIMILARITY, append_similarity_head, expose_outputs, fold_batch_norms

from tests.conftest import prepared
from tests.whitebox import nets
from tests.whitebox.numerics import session


def _ops(model: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.node)


def test_fold_batch_norms_folds_exactly_the_batch_norms_after_a_conv_and_keeps_the_function():
    model = nets.conv_net()
    before = model.SerializeToString()
    folded = fold_batch_norms(model)
    assert model.SerializeToString() == before  # a copy: the user's model is untouched
    assert _ops(model, "BatchNormalization") == 2 and _ops(folded, "BatchNormalization") == 1  # the one after Add stays
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 9, 10)).astype(np.float32)
    np.testing.assert_allclose(session(folded).run(None, {"x": x})[0], session(model).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-6)
    iresnet = zoo.iresnet_embedding()
    assert _ops(fold_batch_norms(iresnet), "BatchNormalization") == 0  # all three follow a Conv


def test_expose_outputs_types_every_tensor_and_copies():
    model = nets.dense_net()
    before = model.SerializeToString()
    names = [node.output[0] for node in model.graph.node]
    exposed = expose_outputs(model, names)
    assert model.SerializeToString() == before
    assert [v.name for v in exposed.graph.output] == names
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE for v in exposed.graph.output)
    onnx.checker.check_model(exposed)


def test_similarity_head_outputs_the_scorers_cosines():
    model = prepared(zoo.iresnet_embedding(normalize=True), {"kind": "embedding"})
    before = model.loaded.proto.SerializeToString()
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    refs = rng.normal(size=(2, 16))
    wb = instrument(model, references=refs)
    acts = wb.forward(to_model_input(images, model.spec))
    expected = Scorer(model, EmbeddingTarget(refs)).score([images])
    np.testing.assert_allclose(acts.values[SIMILARITY], expected, atol=1e-5)
    assert model.loaded.proto.SerializeToString() == before
    assert wb.folded_batch_norms == 3 and wb.similarity
    with pytest.raises(ValueError, match="non-zero"):
        append_similarity_head(model.loaded.proto, "embedding", np.zeros((1, 16)))


def test_instrumented_outputs_are_the_exposed_tensors_only():
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    wb = instrument(model)
    assert [v.name for v in wb.proto.graph.output] == list(wb.exposed)
    assert "logits" in wb.exposed and model.spec.input_name not in wb.exposed
    assert all(node.output[0] in wb.exposed for node in wb.proto.graph.node)  # a chain: every output is read


@pytest.mark.parametrize(("build", "mode"), [(lambda: zoo.vgg_classifier(batch=1), "rewritten"),
                                             (zoo.hardcoded_batch_classifier, "fixed")])
def test_models_with_a_fixed_batch_run_as_prepared(build, mode):
    model = prepared(build(), {"kind": "classifier"})
    assert model.batch.mode == mode
    wb = instrument(model)
    images = np.random.default_rng(2).uniform(0, 255, (3, model.spec.height, model.spec.width, 3)).astype(np.float32)
    acts = wb.forward(to_model_input(images, model.spec))
    output = model.spec.output_name
    assert acts.values[output].shape[0] == 3 and acts.stats.images == 3
    np.testing.assert_allclose(acts.values[output], embed(model, images), rtol=1e-5, atol=1e-6)


def test_softmax_seed_is_the_softmax_jacobian_row():
    n = nets.Net(0, np.float64)
    n.op("Identity", ["x"])
    wb = instrument_graph(n.model(["N", 3], 3), "x", "y", softmax=True)
    z = np.array([[0.5, -1.0, 2.0]])
    values = wb.forward(z).values
    seed = wb.seed(values, "gradient", 2)

    def softmax(v: np.ndarray) -> np.ndarray:
        return np.exp(v) / np.exp(v).sum()

    numeric = [(softmax(z[0] + 1e-6 * e)[2] - softmax(z[0] - 1e-6 * e)[2]) / 2e-6 for e in np.eye(3)]
    np.testing.assert_allclose(seed[0], numeric, atol=1e-9)
    np.testing.assert_array_equal(wb.seed(values, "excitation", 2), [[0.0, 0.0, 1.0]])  # probabilities start one-hot
    two = wb.forward(np.concatenate([z, z])).values  # one target per row: a batch of (image, class) pairs
    np.testing.assert_allclose(wb.seed(two, "gradient", np.array([2, 0]))[0], seed[0])
    np.testing.assert_array_equal(wb.seed(two, "excitation", np.array([2, 0])), [[0, 0, 1], [1, 0, 0]])


def test_constants_computed_from_initializers_and_constant_nodes_are_folded():
    n = nets.Net(0, np.float64)
    weight = n.op("Transpose", [n.normal(3, 4)], perm=[1, 0])  # (4, 3) computed from an initializer
    n.nodes.append(onnx.helper.make_node("Constant", [], ["two"], value=onnx.numpy_helper.from_array(np.array(2.0))))
    n.op("Mul", [n.op("MatMul", ["x", weight]), "two"])
    model = n.model(["N", 4], 3)
    wb = instrument_graph(model, "x", "y")
    acts = wb.forward(np.ones((1, 4)))
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    grad = backward(wb.graph, acts.values, np.array([[1.0, 0.0, -1.0]]), "gradient")["x"]
    np.testing.assert_allclose(grad, [2.0 * (w[0] - w[2])])


def test_layers_resolve_by_name_and_refuse_others_with_a_listing():
    model = prepared(zoo.vgg_classifier(), {"kind": "classifier"})
    wb = instrument(model)
    values = wb.forward(to_model_input(np.zeros((1, 32, 32, 3), np.float32), model.spec)).values
    convs = [node.output[0] for node in model.loaded.proto.graph.node if node.op_type == "Conv"]
    assert wb.layer("last_conv", values) == convs[-1]
    assert wb.layer("input", values) == "input"
    assert wb.layer(convs[0], values) == convs[0]
    with pytest.raises(InvalidRequest) as info:
        wb.layer("nope", values)
    assert info.value.field == "layer" and convs[-1] in str(info.value)


def test_instrumentation_is_reused_per_model_and_reference_set():
    from faceaudit.testing import zoo
    from faceaudit.whitebox.instrument import CACHED_INSTRUMENTATIONS, instrument

    from tests.conftest import prepared

    classifier = prepared(zoo.linear_classifier(), {"kind": "classifier"})
    assert instrument(classifier) is instrument(classifier)
    embedder = prepared(zoo.linear_classifier(), {"kind": "embedding"})
    rng = np.random.default_rng(0)
    first = rng.normal(size=(2, 5))
    built = instrument(embedder, references=first)
    assert instrument(embedder, references=first.copy()) is built
    assert instrument(embedder, references=first + 1) is not built  # another mate: another head
    for _ in range(CACHED_INSTRUMENTATIONS + 2):
        instrument(embedder, references=rng.normal(size=(2, 5)))
    assert sum(1 for k in embedder.derived if k[0] == "instrumented") == CACHED_INSTRUMENTATIONS
