"""Every quirk of the zoo end to end: load from a file, infer the spec, prepare, score, and compare
with onnxruntime run by hand on the untouched model, one image per call."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from faceaudit.engine.prepare import prepare
from faceaudit.engine.runtime import RuntimeOptions
from faceaudit.engine.scorer import ClassTarget, EmbeddingTarget, Scorer
from faceaudit.model_info import inspect_model
from faceaudit.models import load_model, resolve_spec
from faceaudit.testing import zoo

VALUES = {"two_outputs": {"output": "517"}}
EXACT = {"dynamic_quantized"}  # batch-dependent: compared one image per call


def _hand_reference(path, images: np.ndarray, output: str | None) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    dims = meta.shape
    nhwc = dims[3] in (1, 3) and dims[1] not in (1, 3)
    channels = dims[3] if nhwc else dims[1]
    x = images.astype(np.float64) / 255.0
    if channels == 1:
        x = x @ np.array([0.299, 0.587, 0.114])[:, None]
    if not nhwc:
        x = x.transpose(0, 3, 1, 2)
    rows = [session.run([output] if output else None, {meta.name: x[i : i + 1].astype(np.float32)})[0] for i in range(len(x))]
    return np.concatenate(rows).reshape(len(x), -1)


@pytest.mark.parametrize("stem", sorted(zoo.ZOO))
def test_each_zoo_model_loads_inspects_and_scores_like_onnxruntime(tmp_path, stem, faces):
    path = tmp_path / f"{stem}.onnx"
    onnx.save_model(zoo.ZOO[stem](), path)
    loaded = load_model(path)
    kind = "embedding" if "embedding" in stem else "classifier"
    spec = resolve_spec(loaded, {"kind": kind, **VALUES.get(stem, {})})
    info = inspect_model(loaded, spec).to_dict()
    assert info["batch"]["mode"] in ("dynamic", "rewritten", "fixed") and info["unknown_fields"] == {}

    model = prepare(loaded, spec, RuntimeOptions(max_batch=4, exact=stem in EXACT))
    images = faces(7, spec.height, spec.width)
    expected = _hand_reference(path, images, spec.output_name)
    if kind == "classifier":
        got = Scorer(model, ClassTarget(1)).score([images[:3], images[3:]])
        np.testing.assert_allclose(got, expected[:, 1], rtol=1e-4, atol=1e-5)
    else:
        ref = expected[0]
        got = Scorer(model, EmbeddingTarget(ref)).score([images])
        cos = expected @ ref / np.linalg.norm(expected, axis=1) / np.linalg.norm(ref)
        np.testing.assert_allclose(got, cos, rtol=1e-4, atol=1e-5)
