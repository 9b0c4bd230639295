"""The scorer against closed forms computed here in numpy, independently of faceaudit's code."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import numpy as np
import pytest
from onnx import numpy_helper

from faceaudit.engine.runtime import RunStop, RunStopped, stopping_with
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer, embed
from faceaudit.errors import InvalidRequest, ModelOutputError
from faceaudit.testing import zoo

from tests.conftest import prepared
from tests.engine.hostile_graphs import loop_if_bright
from tests.engine.test_prepare import _reference

LUMA = np.array([0.299, 0.587, 0.114])


def _weights(proto) -> tuple[np.ndarray, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    return inits["W"], inits["b"]


def _linear_logits(proto, images: np.ndarray, *, layout="NCHW", bgr=False, grey=False, scale=1 / 255,
                   mean=(0.0,), std=(1.0,)) -> np.ndarray:
    """What the linear zoo model must output for RGB [0,255] images, by the spec's documented formula."""
    x = images.astype(np.float64)
    if grey:
        x = (x @ LUMA)[..., None]
    elif bgr:
        x = x[..., ::-1]
    x = (x * scale - np.asarray(mean)) / np.asarray(std)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    w, b = _weights(proto)
    return x.reshape(len(x), -1) @ w.T + b


@pytest.mark.parametrize(
    ("layout", "channels", "values", "formula"),
    [
        ("NCHW", 3, {}, {}),
        ("NHWC", 3, {}, {"layout": "NHWC"}),
        ("NCHW", 3, {"channel_order": "BGR", "scale": 1.0, "mean": [10, 20, 30], "std": [50, 60, 70]},
         {"bgr": True, "scale": 1.0, "mean": (10, 20, 30), "std": (50, 60, 70)}),
        ("NHWC", 3, {"channel_order": "BGR", "mean": 0.5, "std": 0.5}, {"layout": "NHWC", "bgr": True, "mean": (0.5,), "std": (0.5,)}),
        ("NCHW", 1, {"scale": 1 / 127.5, "mean": 1.0}, {"grey": True, "scale": 1 / 127.5, "mean": (1.0,)}),
    ],
)
def test_class_scores_equal_the_closed_form(faces, layout, channels, values, formula):
    proto = zoo.linear_classifier(height=6, width=5, channels=channels, classes=4, layout=layout)
    model = prepared(proto, {"kind": "classifier", **values})
    images = faces(9, 6, 5)
    expected = _linear_logits(proto, images, **formula)
    for k in range(4):
        np.testing.assert_allclose(Scorer(model, ClassTarget(k)).score([images]), expected[:, k], rtol=1e-4, atol=1e-4)


def test_softmax_scores_are_probabilities_of_the_target(faces):
    proto = zoo.linear_classifier(classes=5)
    model = prepared(proto, {"kind": "classifier", "softmax": True})
    images = faces(6, 8, 8)
    logits = _linear_logits(proto, images)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(Scorer(model, ClassTarget(3)).score([images]), probs[:, 3], rtol=1e-4, atol=1e-6)


def test_embedding_scores_are_cosines_to_each_reference(faces, rng):
    proto = zoo.linear_classifier(classes=7)
    model = prepared(proto, {"kind": "embedding"})
    images, refs = faces(10, 8, 8), rng.normal(size=(2, 7))
    emb = _linear_logits(proto, images)
    cos = (emb @ refs.T) / np.linalg.norm(emb, axis=1, keepdims=True) / np.linalg.norm(refs, axis=1)
    np.testing.assert_allclose(Scorer(model, EmbeddingTarget(refs)).score([images]), cos, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Scorer(model, EmbeddingTarget(refs[0])).score([images]), cos[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed(model, images), emb, rtol=1e-4, atol=1e-4)


def test_chunking_and_batch_size_do_not_change_scores_and_chunks_come_back_in_their_sizes(faces):
    proto = zoo.linear_classifier()
    images = faces(240, 8, 8)
    sizes = [1, 7, 100, 0, 3, 64, 65]
    bounds = np.cumsum([0, *sizes])
    expected = _linear_logits(proto, images)[:, 2]
    for max_batch in (1, 16, 64):
        model = prepared(proto, {"kind": "classifier"}, max_batch=max_batch)
        scorer = Scorer(model, ClassTarget(2))
        parts = list(scorer.stream(images[a:b] for a, b in zip(bounds[:-1], bounds[1:])))
        assert [len(p) for p in parts] == sizes
        np.testing.assert_allclose(np.concatenate(parts), expected, rtol=1e-4, atol=1e-4)
        # The runtime saw only power-of-two batches up to max_batch: no new shape per call.
        assert scorer.stats.batch_sizes <= {2**i for i in range(7) if 2**i <= max_batch}
        assert scorer.stats.images == 240


def test_stream_is_lazy(faces):
    """Chunk i's scores come out before chunk i + 2 is asked for: one batch runs while the next fills."""
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"}, max_batch=8)
    pulled = []

    def chunks():
        for i in range(5):
            pulled.append(i)
            yield faces(8, 8, 8)

    for i, scores in enumerate(Scorer(model, ClassTarget(0)).stream(chunks())):
        assert len(scores) == 8 and pulled[-1] <= i + 1


def test_fixed_batch_and_exact_models_score_like_single_image_runs(faces):
    for proto, options in ((zoo.hardcoded_batch_classifier(), {}), (zoo.dynamic_quantized_classifier(), {"exact": True})):
        model = prepared(proto, {"kind": "classifier"}, **options)
        images = faces(5, 16, 16)
        x = (images / 255).transpose(0, 3, 1, 2).astype(np.float32)
        np.testing.assert_allclose(Scorer(model, ClassTarget(1)).score([images]), _reference(proto, x)[:, 1], rtol=1e-5, atol=1e-6)


def test_nan_output_names_the_batch(faces):
    model = prepared(zoo.nan_classifier(), {"kind": "classifier", "scale": 1 / 255}, max_batch=4)
    bright, dark = np.full((4, 8, 8, 3), 250, np.float32), np.full((4, 8, 8, 3), 5, np.float32)
    scorer = Scorer(model, ClassTarget(0))
    assert np.isfinite(scorer.score([bright])).all()
    with pytest.raises(ModelOutputError, match=r"NaN or infinite values in batch 1 \(images 4\.\.7 of this stream\); first bad row 0"):
        scorer.score([bright, dark])


def test_zero_embedding_is_an_error(faces):
    proto = zoo.linear_classifier()
    for t in proto.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
    model = prepared(proto, {"kind": "embedding"})
    with pytest.raises(ModelOutputError, match="all-zero embedding"):
        Scorer(model, EmbeddingTarget(np.ones(5))).score([faces(2, 8, 8)])


@pytest.mark.parametrize(
    ("kind", "target", "match"),
    [
        ("classifier", ClassTarget(5), "outside 0..4"),
        ("classifier", ClassTarget(-1), "outside 0..4"),
        ("classifier", EmbeddingTarget(np.ones(5)), "class index"),
        ("embedding", ClassTarget(0), "reference embeddings"),
        ("embedding", EmbeddingTarget(np.ones(4)), "5 values"),
        ("embedding", EmbeddingTarget(np.zeros(5)), "non-zero"),
        ("embedding", EmbeddingTarget(np.full(5, np.nan)), "finite"),
    ],
)
def test_bad_targets_name_the_target_field(kind, target, match):
    model = prepared(zoo.linear_classifier(), {"kind": kind})
    with pytest.raises(InvalidRequest, match=match) as info:
        Scorer(model, target)
    assert info.value.field == "target"


def test_bad_chunks_are_refused(faces):
    scorer = Scorer(prepared(zoo.linear_classifier(), {"kind": "classifier"}), ClassTarget(0))
    bad = faces(2, 8, 8)
    bad[1, 3, 3, 0] = np.nan
    with pytest.raises(InvalidRequest, match="NaN"):
        scorer.score([bad])
    with pytest.raises(InvalidRequest, match="images"):
        scorer.score([faces(2, 9, 8)])
    with pytest.raises(InvalidRequest, match="images"):
        scorer.score([faces(2, 8, 8)[0]])


def test_kind_is_required_to_score():
    with pytest.raises(InvalidRequest, match="kind.*--kind"):
        Scorer(prepared(zoo.linear_classifier()), ClassTarget(0))


def test_peak_memory_does_not_grow_with_the_number_of_perturbations():
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"}, max_batch=32)
    base = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)

    def peak(n_chunks: int) -> int:
        def chunks():
            for i in range(n_chunks):
                chunk = np.repeat(base[None], 50, axis=0)
                chunk[:, i % 8] = 0.0
                yield chunk

        scorer = Scorer(model, ClassTarget(0))
        gc.collect()
        tracemalloc.start()
        total = 0.0
        for scores in scorer.stream(chunks()):
            total += float(scores.sum())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4), peak(400)  # 200 vs 20,000 perturbations
    assert large < small * 1.5 + 16_384, (small, large)


def test_abandoning_a_stream_stops_the_work_after_the_batch_in_flight(faces):
    model = prepared(zoo.linear_classifier(), {"kind": "classifier"}, max_batch=8)
    scorer = Scorer(model, ClassTarget(0))
    pulled = []

    def chunks():
        for i in range(100):
            pulled.append(i)
            yield faces(8, 8, 8)

    stream = scorer.stream(chunks())
    next(stream)
    stream.close()  # what a cancelled request does
    assert len(pulled) <= 3 and scorer.stats.batches <= 2


def test_the_runtime_thread_runs_in_the_callers_context_so_the_work_in_progress_can_stop_it():
    """A session made for a call (not served behind the batcher) is run on the scorer's runtime thread:
    the call's stop (runtime.stopping_with) must reach it there."""
    model = prepared(loop_if_bright(), {"kind": "classifier", "scale": 1})
    # Grey 200 starts a Loop of 2^40 iterations; one batch more than fits runs the first on the runtime thread.
    bright = np.full((model.session.max_batch + 1, model.spec.require("height"), model.spec.require("width"), 3),
                     200.0, np.float32)
    call = RunStop()
    threading.Timer(0.3, call.stop, args=("the call ended",)).start()
    started = time.perf_counter()
    with stopping_with(call), pytest.raises(RunStopped, match="the call ended"):
        Scorer(model, ClassTarget(0)).score([bright])
    assert time.perf_counter() - started < 10
