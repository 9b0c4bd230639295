from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from faceaudit.methods.saliency_map import SaliencyMap, overlay


def _map(values, **kw) -> SaliencyMap:
    return SaliencyMap(values=values, method="occlusion", options={"patch": 3, "fill": "zero"}, target={"class_index": 2},
                       model_sha256="ab" * 32, spec={"scale": {"value": 1 / 255, "source": "assumed"}}, seed=None,
                       timings={"total_s": 0.5}, forward_passes=17, **kw)


def test_save_writes_npy_json_png(tmp_path):
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    face = np.full((3, 4, 3), 200.0)
    paths = _map(values, extra={"windows": np.int64(4)}).save(tmp_path, image=face, stem="face.occlusion")
    np.testing.assert_array_equal(np.load(paths["npy"]), values.astype(np.float32))
    meta = json.loads(paths["json"].read_text())
    assert meta["method"] == "occlusion" and meta["shape"] == [3, 4] and meta["extra"] == {"windows": 4}
    assert meta["spec"]["scale"]["source"] == "assumed" and meta["forward_passes"] == 17
    picture = np.asarray(Image.open(paths["png"]))
    assert picture.shape == (225, 300, 3) and picture.dtype == np.uint8  # enlarged ×75 for viewing
    np.testing.assert_array_equal(picture[::75, ::75], overlay(values.astype(np.float32), face))


def test_overlay_colours_and_blend():
    values = np.array([[0.0, 1.0]])
    pure = overlay(values)
    assert pure[0, 0, 2] > 100 and pure[0, 0, 0] < 50  # jet: low is blue
    assert pure[0, 1, 0] > 100 and pure[0, 1, 2] < 50  # high is red
    blended = overlay(values, np.zeros((1, 2, 3)), alpha=0.5)
    np.testing.assert_allclose(blended, (pure.astype(float) * 0.5).astype(np.uint8), atol=1)


def test_signed_maps_are_centred_on_zero():
    picture = overlay(np.array([[-2.0, 0.0, 2.0]]), signed=True)
    assert picture[0, 0, 2] > picture[0, 0, 0]  # negative: blue
    assert picture[0, 2, 0] > picture[0, 2, 2]  # positive: red
    assert abs(int(picture[0, 1, 0]) - int(picture[0, 1, 2])) < 20  # zero: near white/neutral


def test_constant_map_and_bad_shapes():
    assert overlay(np.zeros((2, 2))).shape == (2, 2, 3)
    with pytest.raises(ValueError):
        _map(np.zeros((2, 2, 2)))
