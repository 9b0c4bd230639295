"""The command line, run in process through `main(argv)` and once as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

from faceaudit.cli.main import main
from faceaudit.testing import zoo


@pytest.fixture
def model_dir(tmp_path):
    for stem in ("vgg_classifier", "two_outputs", "iresnet_embedding_normalized", "dynamic_quantized", "hardcoded_batch"):
        onnx.save_model(zoo.ZOO[stem](), tmp_path / f"{stem}.onnx")
    return tmp_path


def _face(path, size=(32, 32), seed=0, tint=(1.0, 1.0, 1.0)):
    pixels = (np.random.default_rng(seed).integers(0, 256, (*size, 3)) * np.asarray(tint)).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_inspect_json_reports_spec_sources_batch_and_runtime(model_dir, capsys):
    assert main(["models", "inspect", str(model_dir / "vgg_classifier.onnx"), "--channel-order", "BGR", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spec"]["channel_order"] == {"value": "BGR", "source": "given"}
    assert info["spec"]["scale"]["source"] == "assumed"
    assert info["unknown_fields"] == {"kind": "--kind"}
    assert info["batch"]["mode"] == "dynamic" and info["runtime"]["provider"] == "CPUExecutionProvider"
    assert info["operators"]["Conv"] == 2 and info["opsets"] == {"ai.onnx": 17}
    assert info["outputs"][0]["returned_shape"] == ["batch", 10]


def test_inspect_never_fails_for_want_of_a_spec(model_dir, capsys):
    proto = zoo.vgg_classifier()
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_param = "h"
    onnx.save_model(proto, model_dir / "open.onnx")
    assert main(["models", "inspect", str(model_dir / "open.onnx")]) == 0
    out = capsys.readouterr().out
    assert "height        ?" in out and "set with --size HxW" in out and "batch      unknown" in out


def test_inspect_text_shows_quantised_operators_and_batch_dependence(model_dir, capsys):
    assert main(["models", "inspect", str(model_dir / "dynamic_quantized.onnx")]) == 0
    out = capsys.readouterr().out
    assert "batch-dependent: yes" in out and "ConvInteger" in out and "white-box  unavailable" in out
    assert main(["models", "inspect", str(model_dir / "hardcoded_batch.onnx")]) == 0
    assert "fixed at 1" in capsys.readouterr().out


def test_errors_print_one_line_naming_the_field_and_exit_2(model_dir, capsys):
    assert main(["models", "inspect", str(model_dir / "vgg_classifier.onnx"), "--size", "64x64"]) == 2
    assert capsys.readouterr().err.strip() == (
        "faceaudit: error: height: given 64 but the model graph fixes it to 32")
    (model_dir / "junk.onnx").write_bytes(b"junk")
    assert main(["models", "inspect", str(model_dir / "junk.onnx")]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    face = _face(model_dir / "face.png", (16, 16))
    assert main(["models", "score", str(model_dir / "two_outputs.onnx"), "--kind", "classifier", "--image", str(face),
                 "--target", "0"]) == 2
    err = capsys.readouterr().err
    assert "output_name" in err and "--output" in err


def test_score_classifier_matches_the_runtime_on_the_resized_image(model_dir, capsys):
    face = _face(model_dir / "face.png", (48, 40))
    path = model_dir / "vgg_classifier.onnx"
    assert main(["models", "score", str(path), "--kind", "classifier", "--image", str(face), "--target", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    resized = np.asarray(Image.open(face).convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": (resized / 255).transpose(2, 0, 1)[None].astype(np.float32)})[0]
    # Pillow resizes uint8 with rounding; faceaudit resizes in float: allow that rounding.
    assert result["scores"][0]["score"] == pytest.approx(float(logits[0, 3]), abs=0.02)
    assert result["provider"] == "CPUExecutionProvider" and "scale" in result["assumed_fields"]


def test_score_embedding_against_references(model_dir, capsys):
    probe = _face(model_dir / "p.png", seed=1, tint=(1.0, 0.2, 0.5))
    mate = _face(model_dir / "m.png", seed=2, tint=(0.1, 0.9, 0.3))
    path = str(model_dir / "iresnet_embedding_normalized.onnx")
    assert main(["models", "score", path, "--image", str(probe), "--image", str(mate),
                 "--reference", str(mate), "--reference", str(probe), "--json"]) == 0
    scores = [row["score"] for row in json.loads(capsys.readouterr().out)["scores"]]
    assert scores[0][1] == pytest.approx(1.0, abs=1e-5) and scores[1][0] == pytest.approx(1.0, abs=1e-5)
    assert scores[0][0] == pytest.approx(scores[1][1], abs=1e-5) and scores[0][0] < 0.9999


def test_console_script_is_installed(model_dir):
    exe = shutil.which("faceaudit", path=os.path.dirname(sys.executable)) or shutil.which("faceaudit")
    if exe is None:
        pytest.skip("faceaudit is not installed as a console script in this environment")
    done = subprocess.run([exe, "models", "inspect", str(model_dir / "vgg_classifier.onnx"), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["spec"]["height"]["value"] == 32
