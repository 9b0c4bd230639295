"""`faceaudit explain` end to end: files written, targets, options and errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from faceaudit.cli.main import main
from faceaudit.testing import zoo


@pytest.fixture
def files(tmp_path):
    onnx.save_model(zoo.planted_region_classifier(), tmp_path / "cls.onnx")
    onnx.save_model(zoo.planted_region_embedding(), tmp_path / "emb.onnx")
    rng = np.random.default_rng(0)
    for name in ("probe", "mate", "non_mate"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    return tmp_path


def _run(files, *argv):
    return main(["explain", "--quiet", "--out", str(files / "out"), *argv])


def test_occlusion_of_a_classifier_writes_map_metadata_and_overlay(files, capsys):
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), "--method", "occlusion",
                "--patch", "4", "--stride", "2", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    values = np.load(summary["files"]["npy"])
    meta = json.loads(open(summary["files"]["json"]).read())
    assert values.shape == (32, 32) and meta["options"]["patch"] == 4 and meta["method"] == "occlusion"
    assert meta["target"]["class_index"] == summary["target"]["class_index"]  # the predicted class by default
    assert meta["spec"]["scale"]["source"] == "assumed" and summary["forward_passes"] == meta["forward_passes"] > 100
    assert np.asarray(Image.open(summary["files"]["png"])).shape == (224, 224, 3)
    inside = np.clip(values, 0, None)[8:16, 20:28].sum() / np.clip(values, 0, None).sum()
    assert inside > 0.5  # the planted box dominates (exact thresholds are tested per method)


def test_rise_of_an_embedding_model_with_non_mate_is_contrastive(files, capsys):
    assert _run(files, "--model", str(files / "emb.onnx"), "--kind", "embedding", "--image", str(files / "probe.png"),
                "--mate", str(files / "mate.png"), "--non-mate", str(files / "non_mate.png"), "--method", "rise",
                "--masks", "200", "--seed", "3", "--json") == 0
    meta = json.loads(open(json.loads(capsys.readouterr().out)["files"]["json"]).read())
    assert meta["signed"] and meta["seed"] == 3 and meta["target"] == {"mate": True, "non_mate": True}


@pytest.mark.parametrize(("argv", "message"), [
    (["--method", "xrai"], "method: unknown method 'xrai'"),
    (["--method", "corr-rise"], "corr_rise explains embedding models, not classifiers"),
    (["--method", "occlusion", "--patch", "0"], "patch: 0 must be"),
    (["--method", "rise", "--option", "keep=2"], "keep"),
    (["--method", "rise", "--option", "colour=red"], "colour: unknown option"),
    (["--method", "occlusion", "--target", "7"], "target: 7 must be an integer in 0..2"),
    (["--method", "occlusion", "--mate", "x.png"], "mate:"),
])
def test_errors_name_the_field(files, capsys, argv, message):
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), *argv) == 2
    assert message in capsys.readouterr().err


def test_embedding_model_needs_a_mate(files, capsys):
    assert _run(files, "--model", str(files / "emb.onnx"), "--kind", "embedding", "--image", str(files / "probe.png"),
                "--method", "occlusion") == 2
    assert "mate: an embedding model needs --mate" in capsys.readouterr().err


def _faces_with_landmarks(folder, count=3):
    """Faces whose five landmarks (ArcFace layout at 32 px) are known, saved at 64 px: file pixels = 2x model pixels."""
    from faceaudit.alignment import ARCFACE_112

    folder.mkdir()
    rng = np.random.default_rng(1)
    points = (ARCFACE_112 + 0.5) * 64 / 112 - 0.5
    table = {}
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
        table[f"f{i}.png"] = points.tolist()
    return table


def test_cis_with_landmarks_is_a_canonical_map(files, capsys):
    table = _faces_with_landmarks(files / "faces", 1)
    (files / "lm.json").write_text(json.dumps(table["f0.png"]))
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "faces" / "f0.png"), "--method", "cis",
                "--landmarks", str(files / "lm.json"), "--patch", "5", "--stride", "2", "--json") == 0
    meta = json.loads(open(json.loads(capsys.readouterr().out)["files"]["json"]).read())
    assert meta["frame"] == "canonical" and meta["shape"] == [32, 32]


def test_landmarks_are_refused_for_input_frame_methods(files, capsys):
    (files / "lm.json").write_text("[[1, 2]]")
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), "--method", "occlusion",
                "--landmarks", str(files / "lm.json")) == 2
    assert "landmarks:" in capsys.readouterr().err


def test_cms_over_a_folder_writes_the_mean_canonical_map(files, capsys):
    table = _faces_with_landmarks(files / "faces")
    (files / "lm.json").write_text(json.dumps(table))
    out = files / "cms"
    assert main(["cms", "--quiet", "--model", str(files / "cls.onnx"), "--images", str(files / "faces"),
                 "--landmarks", str(files / "lm.json"), "--patch", "5", "--stride", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((out / "cms.json").read_text())
    assert summary["images"] == 3 and meta["method"] == "cms" and meta["extra"]["image_names"] == ["f0.png", "f1.png", "f2.png"]
    assert np.load(out / "cms.npy").shape == (32, 32) and (out / "cms.png").exists()


def test_cms_errors(files, capsys):
    assert main(["cms", "--model", str(files / "cls.onnx"), "--images", str(files / "nowhere"), "--out", str(files)]) == 2
    assert "images:" in capsys.readouterr().err
    table = _faces_with_landmarks(files / "faces", 1)
    (files / "lm.json").write_text(json.dumps({"other.png": table["f0.png"]}))
    assert main(["cms", "--quiet", "--model", str(files / "cls.onnx"), "--images", str(files / "faces"),
                 "--landmarks", str(files / "lm.json"), "--out", str(files / "o")]) == 2
    assert "no landmarks for 'f0.png'" in capsys.readouterr().err


@pytest.mark.parametrize("points", ["[[1, 2, 3]]", "[]", "[[1, 2], [3, 4]]"])
def test_landmarks_of_the_wrong_shape_are_refused(files, capsys, points):
    (files / "lm.json").write_text(points)
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), "--method", "cis",
                "--landmarks", str(files / "lm.json")) == 2
    assert "landmarks: expected 5 [x, y] points" in capsys.readouterr().err


def test_cms_refuses_one_landmark_list_for_every_image(files, capsys):
    table = _faces_with_landmarks(files / "faces", 2)
    (files / "lm.json").write_text(json.dumps(table["f0.png"]))
    assert main(["cms", "--quiet", "--model", str(files / "cls.onnx"), "--images", str(files / "faces"),
                 "--landmarks", str(files / "lm.json"), "--out", str(files / "o")]) == 2
    assert "one entry per image" in capsys.readouterr().err


def test_an_unusable_out_folder_fails_before_any_work(files, capsys):
    (files / "taken").write_text("a file")
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), "--method", "rise",
                "--out", str(files / "taken" / "sub")) == 2
    assert "out: cannot create the folder" in capsys.readouterr().err


def test_white_box_methods_run_from_the_cli_with_a_layer(files, capsys):
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), "--method", "ebp",
                "--layer", "input", "--json") == 0
    meta = json.loads(open(json.loads(capsys.readouterr().out)["files"]["json"]).read())
    assert meta["options"]["layer"] == "input" and meta["extra"]["graph"] == "instrumented"
    assert abs(np.load(files / "out" / "probe.ebp.npy").sum() - 1) < 1e-4  # EBP maps are distributions
    assert _run(files, "--model", str(files / "cls.onnx"), "--image", str(files / "probe.png"), "--method", "gradcam",
                "--layer", "no_such_tensor") == 2
    assert "layer:" in capsys.readouterr().err
